"""Firmware image transfer: a 1 MiB image in 1024-byte blocks to a meter process, over the TCP
wrapper and over HDLC, by our upgrade driver and by gurux-dlms's image transfer client.

What is compared. The same meter process, the same association on each link, the same image and
block size; client library against client library. Over the TCP wrapper the Management client
(HLS 7), over HDLC the Maintenance client (HLS 6), the clients the companion standard's model
lets upgrade the meter on those ports; both with security suite 1, every request and answer
authenticated and encrypted (AES-GCM by the client for each block, by the meter for each answer).

- ours: `smartmeter.hes.firmware` as `smartmeter fw upgrade` runs it: image_transfer_initiate,
  the resume check it always makes (attributes 3 and 4; on a fresh transfer every block is
  missing), 1024 image_block_transfer requests one after the other, each waiting for its answer,
  then attributes 3 and 4 again to find any block the meter lacks (none here);
- gurux-dlms 1.0.203: `GXDLMSImageTransfer.imageTransferInitiate`, `imageBlockTransfer` (which
  builds and ciphers every block message before the first is sent: inside its time), each
  message sent and its answer read (tests/interop/gurux_peer.py moves the bytes), then a read of
  attribute 3.

Timed (wall time, `time.perf_counter`, best of --runs; the meter's own work is in it, the same for
both): from the initiate to the answer of the last read. Not timed: the association, and before
each run the abort that makes the next transfer start afresh (image_transfer_enabled FALSE, then
TRUE). No verification: the 1 MiB are random bytes, not an image the meter would accept, and the
transfer does not look at them. After each client's runs the script checks that the meter's
holding file is the image, byte for byte. Also printed: each client's CPU time in the best run
(`time.process_time`, this process only), and, as the events benchmark does, how long gurux's
own pure-Python AES-GCM took in it, with a second ratio that leaves that out.

HDLC: both clients keep their defaults, which the meter's HDLC setup also has: information
field 128 bytes, window 1, so a block request (1,050 bytes ciphered) travels in 9 I-frames, each
acknowledged before the next.

    .venv/bin/python benchmarks/firmware_transfer.py [--runs N] [--size BYTES] [--block-size N] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import itertools
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "interop")]

from smartmeter.cosem.data import Data  # noqa: E402
from smartmeter.hes import firmware  # noqa: E402
from smartmeter.hes.client import MeterClient  # noqa: E402
from smartmeter.hes.connection import HdlcLink, WrapperLink  # noqa: E402
from smartmeter.hes.credentials import load_credentials  # noqa: E402

IDENTIFIER = "BENCH-TRANSFER"
PHYSICAL_ADDRESS = 0x10


def _check(condition: bool, message: str) -> None:
    # Not assert: the checks must also hold under python -O.
    if not condition:
        raise SystemExit(f"benchmark check failed: {message}")


class Counters:
    """One invocation-counter sequence for a client, shared by ours and gurux's in turn."""

    def __init__(self) -> None:
        self.next = itertools.count(1)

    def __call__(self) -> int:
        return next(self.next)

    def skip_to(self, value: int) -> None:
        self.next = itertools.count(value)


# -- ours -------------------------------------------------------------------------------------------------------


def ours(meter, credentials: Path, counters: Counters, image: bytes, block_size: int, hdlc: bool, runs: int) -> dict:
    creds = load_credentials(credentials)
    security = dataclasses.replace(creds.security, invocation_counter=counters)
    blocks = math.ceil(len(image) / block_size)

    async def go() -> dict:
        if hdlc:
            link = HdlcLink("127.0.0.1", meter.hdlc_port, creds.client_sap, creds.server_sap, PHYSICAL_ADDRESS, 60)
        else:
            link = WrapperLink("127.0.0.1", meter.wrapper_port, creds.client_sap, creds.server_sap, 60)
        best = None
        async with MeterClient(link, security=security) as client:
            if await firmware.read_block_size(client) != block_size:
                await _abort(client)
                await firmware.set_block_size(client, block_size)
            for _ in range(runs):
                await _abort(client)
                cpu, start = time.process_time(), time.perf_counter()
                await firmware.initiate(client, IDENTIFIER.encode(), len(image))
                missing = await firmware.missing_blocks(client, blocks)
                await firmware.transfer(client, image, block_size, missing)
                left = await firmware.missing_blocks(client, blocks)
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                _check(len(missing) == blocks and not left, f"ours: {len(left)} blocks missing after the transfer")
                if best is None or seconds < best["seconds"]:
                    best = {"seconds": seconds, "cpu_seconds": cpu}
        return best

    return asyncio.run(go())


async def _abort(client) -> None:
    """image_transfer_enabled FALSE then TRUE: status 0, blocks forgotten; the next initiate starts afresh."""
    for enabled in (False, True):
        await client.set(firmware.IMAGE_TRANSFER, 5, Data.boolean(enabled), class_id=18)


# -- gurux ------------------------------------------------------------------------------------------------------


def gurux(meter, credentials: Path, counters: Counters, image: bytes, block_size: int, hdlc: bool,
          runs: int) -> dict:
    from gurux_dlms import GXDLMSClient
    from gurux_dlms.GXDLMSChippering import GXDLMSChippering
    from gurux_dlms.enums import InterfaceType
    from gurux_dlms.objects import GXDLMSImageTransfer
    from gurux_secure_peer import GuruxSecureClient

    spent = [0.0]

    def timed(function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return classmethod(wrapper)

    originals = {name: GXDLMSChippering.__dict__[name] for name in ("encryptAesGcm", "decryptAesGcm")}
    client = GuruxSecureClient(meter.hdlc_port if hdlc else meter.wrapper_port, credentials, counters())
    client.sock.settimeout(60)
    if hdlc:
        client.hdlc = True
        client.client.interfaceType = InterfaceType.HDLC
        client.client.serverAddress = GXDLMSClient.getServerAddress(1, PHYSICAL_ADDRESS)
    blocks = math.ceil(len(image) / block_size)
    it = GXDLMSImageTransfer()

    def abort() -> None:
        for enabled in (False, True):
            it.imageTransferEnabled = enabled
            _check(client.transfer(client.client.write(it, 5)).error == 0, "gurux: the abort was refused")

    best = None
    with contextlib.redirect_stdout(io.StringIO()):  # gurux prints a line per protected message
        try:
            if hdlc:
                client.client.parseUAResponse(client.transfer(client.client.snrmRequest()).data)
            client.associate()
            client.read(it, 2)
            _check(it.imageBlockSize == block_size, f"gurux reads block size {it.imageBlockSize}")
            for name, function in originals.items():
                setattr(GXDLMSChippering, name, timed(function.__func__))
            for _ in range(runs):
                abort()
                spent[0] = 0.0
                cpu, start = time.process_time(), time.perf_counter()
                _check(client.transfer(it.imageTransferInitiate(client.client, IDENTIFIER, len(image))).error == 0,
                       "gurux: initiate refused")
                for packet in it.imageBlockTransfer(client.client, image, None):
                    _check(client.transfer(packet).error == 0, "gurux: a block was refused")
                bits = client.read(it, 3)
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                _check(bits == "1" * blocks, "gurux: blocks missing after the transfer")
                if best is None or seconds < best["seconds"]:
                    best = {"seconds": seconds, "cpu_seconds": cpu, "aes_gcm_seconds": spent[0]}
        finally:
            for name, function in originals.items():
                setattr(GXDLMSChippering, name, function)
            counters.skip_to(int(client.client.ciphering.invocationCounter) + 1)
            try:
                client.close()
            except (OSError, ConnectionError):
                pass
    return best


# -- the run ----------------------------------------------------------------------------------------------------


def measure(runs: int, size: int, block_size: int) -> dict:
    from meterproc import start_meter

    image = os.urandom(size)
    out = {"image_bytes": size, "block_size": block_size, "blocks": math.ceil(size / block_size), "runs": runs}
    with tempfile.TemporaryDirectory() as tmp:
        meter = start_meter(Path(tmp) / "meter")
        try:
            holding = meter.data_dir / "firmware" / "holding.img"
            for link, client in (("wrapper", "management"), ("hdlc", "maintenance")):
                hdlc = link == "hdlc"
                credentials = meter.data_dir / "credentials" / f"{client}.json"
                counters = Counters()
                mine = ours(meter, credentials, counters, image, block_size, hdlc, runs)
                _check(holding.read_bytes() == image, f"ours over {link}: the holding file is not the image")
                theirs = gurux(meter, credentials, counters, image, block_size, hdlc, runs)
                _check(holding.read_bytes() == image, f"gurux over {link}: the holding file is not the image")
                protocol = theirs["seconds"] - theirs["aes_gcm_seconds"]
                out[link] = {"client": client, "ours": mine, "gurux": theirs, "ratio": theirs["seconds"] / mine["seconds"],
                             "gurux_without_aes_gcm_seconds": protocol,
                             "ratio_without_gurux_aes_gcm": protocol / mine["seconds"]}
        finally:
            meter.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="transfers per client and link (best is kept)")
    parser.add_argument("--size", type=int, default=1 << 20, help="image bytes [1 MiB]")
    parser.add_argument("--block-size", type=int, default=1024, help="image_block_size, 64..1024 [1024]")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args()

    import gurux_dlms  # noqa: F401  (fail early if the peer is missing)

    result = measure(args.runs, args.size, args.block_size)
    if args.json:
        print(json.dumps({"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                          **result}, indent=2))
        return
    print(f"Image transfer of {result['image_bytes']:,} bytes in {result['blocks']} blocks of {result['block_size']} "
          f"to a meter process, suite 1 auth+enc, initiate to the last block confirmed, best of {result['runs']} "
          f"(wall time; client CPU in brackets):")
    for link, title in (("wrapper", "TCP wrapper, Management client (HLS 7)"),
                        ("hdlc", "HDLC over TCP (info field 128, window 1), Maintenance client (HLS 6)")):
        r = result[link]
        print(f"  {title}:")
        for name, x in (("ours ", r["ours"]), ("gurux", r["gurux"])):
            rate = result["image_bytes"] / x["seconds"] / 1000
            print(f"    {name}: {x['seconds']:7.2f} s  {rate:6.0f} kB/s   (CPU {x['cpu_seconds']:.2f} s)")
        print(f"    gurux / ours = {r['ratio']:.1f}x; without gurux's pure-Python AES-GCM "
              f"({r['gurux']['aes_gcm_seconds']:.2f} s): {r['gurux_without_aes_gcm_seconds']:.2f} s, "
              f"gurux / ours = {r['ratio_without_gurux_aes_gcm']:.1f}x")


if __name__ == "__main__":
    main()
