"""gurux-dlms's secure client (GXDLMSSecureClient) set up from a meter's credentials file."""
from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.secure import GXDLMSSecureClient

from gurux_peer import GuruxClient

MECHANISMS = {5: Authentication.HIGH_GMAC, 6: Authentication.HIGH_SHA256, 7: Authentication.HIGH_ECDSA}


class GuruxSecureClient(GuruxClient):
    def __init__(self, port: int, credentials: Path, invocation_counter: int, *, signing_key_pem: bytes | None = None):
        creds = json.loads(Path(credentials).read_text())
        here = Path(credentials).parent  # paths in the file are relative to it (or absolute)
        secret = bytes.fromhex(creds["hls_secret"]) if creds.get("hls_secret") else None
        self.client = GXDLMSSecureClient(True, creds["client_sap"], 1, MECHANISMS[creds["authentication"]], secret,
                                         InterfaceType.WRAPPER)
        self.hdlc = False
        cipher = self.client.ciphering
        cipher.security = Security.AUTHENTICATION_ENCRYPTION
        cipher.systemTitle = bytes.fromhex(creds["client_system_title"])
        cipher.blockCipherKey = bytes.fromhex(creds["ek"])
        cipher.authenticationKey = bytes.fromhex(creds["ak"])
        cipher.invocationCounter = invocation_counter
        from gurux_dlms.objects.enums import SecuritySuite

        cipher.securitySuite = SecuritySuite(creds["security_suite"])
        if creds["authentication"] == 7:
            from gurux_dlms.ecdsa.GXPrivateKey import GXPrivateKey
            from gurux_dlms.ecdsa.GXPublicKey import GXPublicKey

            private = serialization.load_pem_private_key(
                signing_key_pem or (here / creds["client_key_pem"]).read_bytes(), None)
            server = x509.load_pem_x509_certificate((here / creds["server_cert_pem"]).read_bytes()).public_key()
            raw_private = private.private_numbers().private_value.to_bytes(32, "big")
            raw_public = server.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            cipher.signingKeyPair = (GXPublicKey.fromRawBytes(raw_public), GXPrivateKey.fromRawBytes(raw_private))
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def associate(self) -> None:
        reply = self.transfer(self.client.aarqRequest())
        self.client.parseAareResponse(reply.data)
        reply = self.transfer(self.client.getApplicationAssociationRequest())
        self.client.parseApplicationAssociationResponse(reply.data)

    def raw(self, frame: bytes) -> bytes:
        """Send bytes as they are; return the meter's answer APDU (wrapper header removed)."""
        self.sock.sendall(frame)
        data = b""
        while len(data) < 8 or len(data) < 8 + int.from_bytes(data[6:8], "big"):
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("meter closed the connection")
            data += chunk
        return data[8:]
