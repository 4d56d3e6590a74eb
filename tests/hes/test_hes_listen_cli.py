"""`smartmeter hes listen` as a process, with an in-process meter served on the LAN wrapper: the
meter's alarm push is printed at once and, with --ack, its descriptor is cleared on the meter by
the Management client; `smartmeter hes lists` reads the meter's push object lists over DLMS."""
from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from smartmeter.cli.hes import _read_lists
from smartmeter.cli.main import main
from smartmeter.cosem.obis import Obis
from smartmeter.hes.push_listener import SETUPS
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.push import METER_CONTEXT
from smartmeter.meter.runtime import Meter, MeterConfig
from smartmeter.transport.aio import serve_wrapper_tcp
from smartmeter.transport.wrapper import WrapperFrame

START = 1773144000.0
ON_ALARM = "0-4:25.9.0.255"


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = Meter(MeterConfig(data_dir=tmp_path_factory.mktemp("meter"), backfill_days=0),
              clock=MeterClock(source=lambda: START))
    yield m
    m.close()


def test_alarm_push_printed_at_once_and_cleared_on_the_meter_with_ack(meter, tmp_path):
    meter.alarms.raise_flag("fraud_attempt")
    reported = meter.alarms.descriptor(1)
    assert reported
    setup = meter.server.directory.by_ln[Obis.parse(ON_ALARM).to_bytes()][1]
    [apdu] = meter.push.frames(setup, START)
    title = meter.identity.system_title.hex().upper()

    async def scenario():
        server = await serve_wrapper_tcp(meter.server, "127.0.0.1", 0)
        meter_port = server.sockets[0].getsockname()[1]
        listener = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "smartmeter", "hes", "listen", "--udp", "0", "--keys",
            str(meter.config.data_dir / "credentials"), "--db", str(tmp_path / "p.sqlite"), "--ack",
            "--meter-port", str(meter_port), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        lines = []
        try:
            first = (await asyncio.wait_for(listener.stdout.readline(), 30)).decode()
            udp_port = int(re.search(r"UDP 127\.0\.0\.1:(\d+)", first)[1])
            loop = asyncio.get_running_loop()
            sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                            remote_addr=("127.0.0.1", udp_port))
            sender.sendto(WrapperFrame(1, 2, apdu).to_bytes())
            for _ in range(2):
                lines.append((await asyncio.wait_for(listener.stdout.readline(), 30)).decode().strip())
            sender.close()
        finally:
            listener.send_signal(signal.SIGINT)
            rest, _ = await asyncio.wait_for(listener.communicate(), 30)
            server.close()
        return lines + rest.decode().splitlines()

    lines = asyncio.run(scenario())
    assert lines[0] == f"ALARM 2026-03-10T12:00:00.000Z meter {title}: descriptor 1 = 0x{reported:08X}"
    assert lines[1] == f"ACK meter {title}: 0-0:97.98.20.255 cleared (0x{reported:08X})"
    assert lines[2].startswith("stopped: ") and "stored 1" in lines[2]
    assert meter.alarms.descriptor(1) == 0


def test_hes_lists_reads_the_push_object_lists_from_the_meter(meter, tmp_path):
    async def scenario():
        server = await serve_wrapper_tcp(meter.server, "127.0.0.1", 0)
        try:
            return await _read_lists("127.0.0.1", server.sockets[0].getsockname()[1],
                                     meter.config.data_dir / "credentials" / "data_readout.json")
        finally:
            server.close()

    title, lists = asyncio.run(scenario())
    assert title == meter.identity.system_title.hex().upper()
    assert set(lists) == set(SETUPS)
    for setup, entries in lists.items():
        instance = meter.server.directory.by_ln[Obis.parse(setup).to_bytes()][1]
        on_meter = [[e.value[0].value, str(Obis.from_bytes(e.value[1].value)), e.value[2].value, e.value[3].value]
                    for e in instance.get(2, METER_CONTEXT).value]
        assert entries == on_meter


def test_hes_show_and_meters_refuse_a_missing_database_in_one_line(tmp_path):
    for command in (["hes", "show"], ["hes", "meters"]):
        result = CliRunner().invoke(main, [*command, "--db", str(tmp_path / "none.sqlite")])
        assert result.exit_code == 2 and result.output.startswith("error: ") and "no such database" in result.output
    assert not (tmp_path / "none.sqlite").exists()
