"""gurux-dlms performs its own firmware image transfer against a real meter process: its
GXDLMSImageTransfer builds image_transfer_initiate, every image_block_transfer, image_verify and
image_activate, as the Management client (HLS 7, security suite 1) over the TCP wrapper; only
bytes are moved here. The meter's answers are checked as gurux decodes them, and the outcome
against what the image says it holds: after the activation the meter runs the image's
application version and shows its digest.

The transfer is one protocol whoever speaks it: `smartmeter fw upgrade` resumes a transfer gurux
began (sending only the blocks the meter lacks), and gurux finishes one this head-end began.

Over the optical port (HDLC) the Maintenance client (HLS 6, suite 1) may upgrade the meter
instead, and gurux does it there too.

gurux ciphers every request when it builds it, so the block messages it makes at once for the whole
image carry increasing invocation counters and must go out in that order, before any other request
is built: a test reads the bitmap before having gurux make the blocks it sends.
"""
from __future__ import annotations

import asyncio
import json
import math
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from gurux_dlms import GXDLMSClient
from gurux_dlms.enums import InterfaceType
from gurux_dlms.objects import GXDLMSData, GXDLMSImageTransfer

import smartmeter
from gurux_secure_peer import GuruxSecureClient
from meter_control import quiet
from smartmeter.cli.firmware import fw_group
from smartmeter.hes import firmware
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.credentials import load_credentials
from smartmeter.legal.interface import build_firmware_image, parse_firmware_image, sign_firmware_image

PACKAGE = Path(smartmeter.__file__).parent
BLOCK = 1024  # the meter's image_block_size as it starts
OTHER_REASON = 250
PHYSICAL_ADDRESS = 0x10  # the meter's HDLC lower address


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[bytes, str]:
    """(unsigned image of the application one version above the running one, that version)."""
    root = tmp_path_factory.mktemp("gurux-release")
    shutil.copytree(PACKAGE, root / "smartmeter", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    init = root / "smartmeter" / "__init__.py"
    running = smartmeter.__version__
    numbers = running.split(".")
    version = ".".join(numbers[:-1] + [str(int(numbers[-1]) + 1)])
    init.write_text(init.read_text().replace(f'__version__ = "{running}"', f'__version__ = "{version}"'))
    return build_firmware_image(root / "smartmeter", parts=("application",)), version


def signed(meter, raw: bytes) -> bytes:
    key = meter.data_dir / "credentials" / "demo-pki" / "firmware-signing-key.pem"
    return sign_firmware_image(raw, key.read_bytes())


class Gurux:
    """gurux sessions as the Management client over the wrapper (or the Maintenance client over
    HDLC), each with invocation counters above the last one's."""

    def __init__(self, meter, first_counter: int = 1_000_000, *, hdlc: bool = False) -> None:
        self.meter, self.counter, self.hdlc = meter, first_counter, hdlc
        self.credentials = meter.data_dir / "credentials" / ("maintenance.json" if hdlc else "management.json")

    def open(self) -> GuruxSecureClient:
        port = self.meter.hdlc_port if self.hdlc else self.meter.wrapper_port
        client = quiet(GuruxSecureClient, port, self.credentials, self.counter)
        if self.hdlc:  # the secure peer speaks the wrapper; HDLC as gurux's own client example sets it up
            client.hdlc = True
            client.client.interfaceType = InterfaceType.HDLC
            client.client.serverAddress = GXDLMSClient.getServerAddress(1, PHYSICAL_ADDRESS)
            client.client.parseUAResponse(quiet(client.transfer, client.client.snrmRequest()).data)
        quiet(client.associate)
        return client

    def close(self, client: GuruxSecureClient) -> None:
        self.counter = client.client.ciphering.invocationCounter + 1
        try:
            quiet(client.close)
        except (OSError, ConnectionError):
            pass  # a meter restarting for an activation has gone away


def action(client: GuruxSecureClient, request) -> int:
    """The action-result gurux decodes (0 success)."""
    return quiet(client.transfer, request).error


def read(client: GuruxSecureClient, obj, attribute: int):
    return quiet(client.read, obj, attribute)


def test_gurux_over_hdlc_as_the_maintenance_client_transfers_and_verifies(meter, release):
    raw = signed(meter, release[0])
    image = parse_firmware_image(raw)
    blocks = math.ceil(len(raw) / BLOCK)
    peers = Gurux(meter, hdlc=True)
    g = peers.open()
    it = GXDLMSImageTransfer()
    assert read(g, it, 2) == BLOCK
    assert action(g, it.imageTransferInitiate(g.client, image.identifier, len(raw))) == 0
    assert [action(g, packet) for packet in it.imageBlockTransfer(g.client, raw, None)] == [0] * blocks
    assert read(g, it, 3) == "1" * blocks
    assert action(g, it.imageVerify(g.client)) == 0 and read(g, it, 6) == 3
    read(g, it, 7)
    assert [(i.size, bytes(i.identification), bytes(i.signature)) for i in it.imageActivateInfo] == \
        [(len(raw), image.identifier.encode(), image.signature)]
    peers.close(g)
    assert (meter.data_dir / "firmware" / "holding.img").read_bytes() == raw


def test_gurux_transfers_verifies_and_activates_an_image(meter, release):
    raw = signed(meter, release[0])
    image = parse_firmware_image(raw)
    (part,) = image.parts
    blocks = math.ceil(len(raw) / BLOCK)
    peers = Gurux(meter)
    g = peers.open()
    it = GXDLMSImageTransfer()
    assert read(g, it, 2) == BLOCK and read(g, it, 5) is True
    assert action(g, it.imageTransferInitiate(g.client, image.identifier, len(raw))) == 0
    count = [0]
    packets = it.imageBlockTransfer(g.client, raw, count)
    assert count[0] == blocks == len(packets)
    assert [action(g, packet) for packet in packets] == [0] * blocks
    assert read(g, it, 3) == "1" * blocks and read(g, it, 4) == blocks
    assert action(g, it.imageVerify(g.client)) == 0
    assert read(g, it, 6) == 3
    read(g, it, 7)
    assert [(i.size, bytes(i.identification), bytes(i.signature)) for i in it.imageActivateInfo] == \
        [(len(raw), image.identifier.encode(), image.signature)]
    assert action(g, it.imageActivate(g.client)) == 0
    peers.close(g)

    deadline = time.monotonic() + 60
    while True:  # the meter restarts on the new software, then says how the activation went
        try:
            g = peers.open()
        except Exception:  # down, or not listening yet: gurux raises its own kinds or the socket's
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        status = read(g, it, 6)
        if status in (6, 7) or time.monotonic() > deadline:
            break
        peers.close(g)
        time.sleep(0.5)
    identifier, signature = GXDLMSData("1.1.0.2.0.255"), GXDLMSData("1.1.0.2.8.255")
    shown = bytes(read(g, identifier, 2)), bytes(read(g, signature, 2))
    peers.close(g)
    assert status == 6
    assert shown == (release[1].encode(), bytes.fromhex(part.digest))


def fw(*args: str):
    return CliRunner().invoke(fw_group, list(args), catch_exceptions=False)


def test_our_upgrade_resumes_a_transfer_gurux_began(meter, release, tmp_path):
    raw = signed(meter, release[0])
    image = parse_firmware_image(raw)
    blocks, began = math.ceil(len(raw) / BLOCK), 150
    peers = Gurux(meter)
    g = peers.open()
    it = GXDLMSImageTransfer()
    read(g, it, 2)
    assert action(g, it.imageTransferInitiate(g.client, image.identifier, len(raw))) == 0
    packets = it.imageBlockTransfer(g.client, raw, None)
    assert [action(g, packet) for packet in packets[:began]] == [0] * began
    peers.close(g)

    path = tmp_path / "image.smfw"
    path.write_bytes(raw)
    result = fw("upgrade", "--meter", f"127.0.0.1:{meter.wrapper_port}", "--credentials", str(peers.credentials),
                "--json", str(path))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert (report["already_on_meter"], report["sent"], report["resent"]) == (began, blocks - began, 0)
    assert report["status"] == 3
    assert (meter.data_dir / "firmware" / "holding.img").read_bytes() == raw


def test_gurux_finishes_a_transfer_we_began(meter, release):
    raw = signed(meter, release[0])
    image = parse_firmware_image(raw)
    blocks = math.ceil(len(raw) / BLOCK)
    credentials = load_credentials(meter.data_dir / "credentials" / "management.json")

    async def ours():
        link = WrapperLink("127.0.0.1", meter.wrapper_port, credentials.client_sap, credentials.server_sap)
        async with MeterClient(link, security=credentials.security) as client:
            await firmware.initiate(client, image.identifier.encode(), len(raw))
            await firmware.transfer(client, raw, BLOCK, range(0, blocks, 2))  # every other block

    asyncio.run(ours())
    peers = Gurux(meter, first_counter=credentials.security.invocation_counter.last_used + 1)
    g = peers.open()
    it = GXDLMSImageTransfer()
    read(g, it, 2)
    expected = "".join("1" if n % 2 == 0 else "0" for n in range(blocks))
    assert read(g, it, 3) == expected and read(g, it, 4) == 1
    # the same identifier and size again: the meter resumes, keeping our blocks
    assert action(g, it.imageTransferInitiate(g.client, image.identifier, len(raw))) == 0
    packets = it.imageBlockTransfer(g.client, raw, None)
    assert [action(g, packets[n]) for n in range(1, blocks, 2)] == [0] * len(range(1, blocks, 2))
    assert read(g, it, 3) == "1" * blocks
    assert action(g, it.imageVerify(g.client)) == 0 and read(g, it, 6) == 3
    peers.close(g)
    assert (meter.data_dir / "firmware" / "holding.img").read_bytes() == raw


def test_what_the_meter_refuses_gurux_reads_as_other_reason(meter, release):
    raw = signed(meter, release[0])
    image = parse_firmware_image(raw)
    peers = Gurux(meter)
    g = peers.open()
    it = GXDLMSImageTransfer()
    read(g, it, 2)
    assert action(g, it.imageTransferInitiate(g.client, image.identifier, len(raw))) == 0
    assert action(g, it.imageVerify(g.client)) == OTHER_REASON  # no block is in yet
    # another image while this one is initiated: refused, nothing changes
    assert action(g, it.imageTransferInitiate(g.client, "ANOTHER", 1000)) == OTHER_REASON
    assert read(g, it, 6) == 1
    # blocks cut at 512 bytes where the meter's are 1024: each is the wrong length
    it.imageBlockSize = 512
    (first, *_) = it.imageBlockTransfer(g.client, raw[:1024], None)
    assert action(g, first) == OTHER_REASON
    assert read(g, it, 3) == "0" * math.ceil(len(raw) / BLOCK) and read(g, it, 4) == 0
    peers.close(g)
