"""I3-6 imprinted SWID: not needed, because the meter shows its software identification on
every interface: DLMS over the wrapper (LAN) and over HDLC (optical port), to the public and
to the secured clients, and on the command line."""
from __future__ import annotations

import asyncio
import json

import pytest

from welmec_support import (
    LEGAL_FIRMWARE_ID, LEGAL_FIRMWARE_SIGNATURE, cli, gurux_read_data, legal_digest, read_public, secured,
)


@pytest.mark.welmec("P2", "U2")
@pytest.mark.parametrize("hdlc", [False, True], ids=["wrapper", "hdlc"])
def test_the_swid_is_readable_by_the_public_client_on_both_interfaces(meter, hdlc):
    """The public client reads the legal firmware identifier and SHA-256 signature over the wrapper and over HDLC, with our client and with gurux-dlms."""
    version, digest = read_public(meter, [(LEGAL_FIRMWARE_ID, 2, 1), (LEGAL_FIRMWARE_SIGNATURE, 2, 1)], hdlc=hdlc)
    assert digest.value.hex() == legal_digest()
    assert version.value.decode() == json.loads(cli("id", "--json").stdout)["legal"]["identifier"]  # "-DEV" if so
    port = meter.hdlc_port if hdlc else meter.wrapper_port
    assert bytes(gurux_read_data(port, LEGAL_FIRMWARE_SIGNATURE, hdlc=hdlc)).hex() == legal_digest()


@pytest.mark.welmec("P2", "U2")
@pytest.mark.parametrize("client", ["management", "data_readout", "installation", "maintenance", "certification"])
def test_every_secured_client_reads_the_swid(meter, client):
    """Every secured client, on its own interface, reads the same legal SWID."""
    async def go():
        async with secured(meter, client) as c:
            return (await c.get(LEGAL_FIRMWARE_SIGNATURE, 2, class_id=1)).value

    assert asyncio.run(go()).hex() == legal_digest()


@pytest.mark.welmec("P2", "U2")
def test_the_command_line_shows_the_swid_without_a_meter_and_from_a_meter(meter):
    """`smartmeter id` shows the SWID from the installed files, and `smartmeter client get 1-0:0.2.8.255` shows the same from the running meter."""
    shown = cli("id")
    assert shown.returncode == 0 and legal_digest() in shown.stdout
    got = cli("client", "--port", str(meter.wrapper_port), "get", LEGAL_FIRMWARE_SIGNATURE)
    assert got.returncode == 0, got.stderr
    assert legal_digest() in got.stdout.replace(" ", "").lower()
