"""A storm of pushes through two listeners into a three-server NATS cluster that loses one
server meanwhile: every authentic push is stored exactly once; duplicates (a push heard by
both listeners), replays, forged and unknown pushes are not."""
from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import socket
import time

import pytest

from fleet_support import HeadEnd
from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.suites import SecurityControl
from smartmeter.transport.wrapper import WrapperFrame

METERS = 50
PUSHES_PER_METER = 60


def push(title: bytes, ek: bytes, ak: bytes, counter: int) -> bytes:
    body = Data.structure([Data.double_long_unsigned(counter * 10), Data.octet_string(title)])
    plain = DataNotification(counter, b"", body).to_bytes()
    apdu = GeneralGloCiphering.protect(SecurityControl(0, True, True), ek, ak, title, counter, plain).to_bytes()
    return WrapperFrame(1, 0x66, apdu).to_bytes()


def stream_leader(cluster) -> int:
    """The index of the node that leads the stream of pushes."""
    from nats.js.errors import Error as JsError

    async def ask():
        import nats
        nc = await nats.connect(cluster.urls)
        try:
            info = await nc.jetstream().stream_info("HES_PUSHES")
            return info.cluster.leader
        finally:
            await nc.close()

    try:
        leader = asyncio.run(ask())
    except (JsError, OSError):
        leader = None
    names = [node.name for node in cluster.nodes]
    return names.index(leader) if leader in names else 0


@pytest.mark.timeout(240)
def test_a_push_storm_is_stored_once_while_a_nats_server_is_lost(tmp_path, pg_dsn, nats_cluster):
    urls = ",".join(nats_cluster.urls)
    h = HeadEnd(tmp_path, pg_dsn, urls)
    try:
        rng = random.Random(5)
        meters = [{"serial": f"PUSH{i:04d}", "system_title": f"{0x5055534800000000 + i:016X}", "host": "127.0.0.1",
                   "port": 9, "ek": secrets.token_hex(16), "ak": secrets.token_hex(16)} for i in range(METERS)]
        (tmp_path / "fleet.json").write_text(json.dumps({"meters": meters}))
        h.import_fleet()
        h.start_worker("--concurrency", "2")
        listeners = [h._spawn(["hes", "listen", "--udp", "0", "--nats", urls, "--store", pg_dsn,
                               "--kek", str(tmp_path / "kek.hex")], "listener") for _ in range(2)]
        h.workers.extend(listeners)
        ports = []
        deadline = time.monotonic() + 60
        while len(ports) < 2:
            assert time.monotonic() < deadline, h.log("listener")
            ports = [int(p) for p in re.findall(r"UDP 127\.0\.0\.1:(\d+)", h.log("listener"))]
            time.sleep(0.2)

        authentic, sent, datagrams = set(), 0, []
        for m in meters:
            title, ek, ak = bytes.fromhex(m["system_title"]), bytes.fromhex(m["ek"]), bytes.fromhex(m["ak"])
            for counter in range(1, PUSHES_PER_METER + 1):
                frame = push(title, ek, ak, counter)
                authentic.add((title, counter))
                datagrams.append((frame, rng.randrange(2)))
                if counter % 7 == 0:  # heard by both listeners
                    datagrams.append((frame, 1 - datagrams[-1][1]))
            forged = bytearray(push(title, ek, ak, PUSHES_PER_METER + 1))
            forged[-1] ^= 1  # the tag no longer verifies
            datagrams.append((bytes(forged), 0))
        stranger = push(b"UNKNOWN1", bytes(16), bytes(16), 5)
        datagrams.append((stranger, 1))
        rng.shuffle(datagrams)
        replays = [d for d in rng.sample(datagrams, 200)]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        killed = None
        began = time.monotonic()
        for n, (frame, which) in enumerate(datagrams + replays):
            sock.sendto(frame, ("127.0.0.1", ports[which]))
            sent += 1
            if n == len(datagrams) // 3:  # the server leading the push stream goes
                killed = stream_leader(nats_cluster)
                nats_cluster.kill(killed)
            if n % 200 == 0:
                time.sleep(0.05)  # about 4,000 datagrams a second: the listeners' sockets keep up
        storm = time.monotonic() - began

        deadline = time.monotonic() + 90
        while True:
            stored = h.query("SELECT system_title, invocation_counter FROM raw_push")
            if len(stored) >= len(authentic) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        keys = [(bytes(r["system_title"]), r["invocation_counter"]) for r in stored]
        assert len(keys) == len(set(keys))
        assert set(keys) == authentic, (len(set(keys)), len(authentic))
        time.sleep(2)  # late duplicates have had their chance to be stored twice
        assert h.query("SELECT count(*) AS n FROM raw_push")[0]["n"] == len(authentic)
        print(f"{sent} datagrams in {storm:.1f} s, {len(authentic)} pushes stored once, server {killed} lost")
    finally:
        h.close()
