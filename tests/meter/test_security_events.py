"""Security events from real causes over real sockets (companion §5.12, Table 38): failed
authentications, a replayed request, sessions; read back over DLMS by the management client."""
from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meterproc import start_meter
from smartmeter.dlms.client import ClientError
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.credentials import load_credentials

MANAGEMENT_SAP = 1
AUTHENTICATION_FAILURE, REPLAY = 46, 50
SESSION_STARTED_LAN, SESSION_ENDED_LAN = 26, 27


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = start_meter(tmp_path_factory.mktemp("security-events") / "meter")
    yield m
    m.stop()


def _session(meter, path, work):
    credentials = load_credentials(path)

    async def go():
        async with MeterClient(WrapperLink("127.0.0.1", meter.wrapper_port, credentials.client_sap,
                                           credentials.server_sap, 10), security=credentials.security) as client:
            return await work(client)

    return asyncio.run(go())


def _copy(original, directory, **changes):
    """The client's credentials with `changes`, sharing the client's invocation counter (the
    meter counts every frame of that client, whoever sent it)."""
    fields = json.loads(original.read_text())
    for key in ("server_cert_pem", "client_key_pem", "client_cert_pem"):  # paths are relative to the file
        if fields.get(key):
            fields[key] = str(original.parent / fields[key])
    fields.update(changes)
    directory.mkdir()
    path = directory / original.name
    path.write_text(json.dumps(fields))
    path.chmod(0o600)
    return path


def _security_log(meter):
    creds = meter.data_dir / "credentials" / "management.json"

    async def work(client):
        _, buffer = await client.profile("0-0:99.98.9.255")
        out = []
        for row in buffer.value:  # clock, event code, {client SAP, server SAP}, client system title
            _, code, partners, title = row.value
            out.append((code.value, tuple(v.value for v in partners.value), bytes(title.value)))
        return out

    return _session(meter, creds, work)


def test_failed_authentications_are_one_event_per_streak_and_a_replay_is_logged(meter, tmp_path):
    original = meter.data_dir / "credentials" / "management.json"
    key = tmp_path / "not-the-key.pem"
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key.chmod(0o600)
    forged = _copy(original, tmp_path / "forged", client_key_pem=str(key))
    for _ in range(4):  # 3 in a row raise the event once; the 4th is the same streak
        with pytest.raises(ClientError):
            _session(meter, forged, lambda client: client.get("0-0:42.0.0.255", 2, class_id=1))
    # the meter counted the forged frames as the client's: the real client goes on from there
    shutil.copy(forged.with_suffix(".fc"), original.with_suffix(".fc"))
    entries = _security_log(meter)
    codes = [code for code, _, _ in entries]
    assert codes == [AUTHENTICATION_FAILURE, SESSION_STARTED_LAN]
    failure = entries[0]
    assert failure[1][0] == MANAGEMENT_SAP  # client SAP of the association that failed
    assert len(failure[2]) == 8  # the client's system title from its AARQ

    # a replay: the same client with an invocation counter the meter has already accepted
    replayed = _copy(original, tmp_path / "replayed")
    (replayed.parent / "management.fc").write_text(json.dumps({
        "format": "smartmeter-invocation-counter/1", "client_invocation_counter": 0, "server_invocation_counter": None}))
    (replayed.parent / "management.fc").chmod(0o600)
    with pytest.raises(ClientError):
        _session(meter, replayed, lambda client: client.get("0-0:42.0.0.255", 2, class_id=1))
    codes = [code for code, _, _ in _security_log(meter)]
    assert codes[:3] == [AUTHENTICATION_FAILURE, SESSION_STARTED_LAN, SESSION_ENDED_LAN]
    assert REPLAY in codes[3:] and codes.count(REPLAY) == 1
