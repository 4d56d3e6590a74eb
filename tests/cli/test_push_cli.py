"""`smartmeter client push-setup / push-schedule / push` as a user types them: what is wrong in the
command line is one error line before the meter is asked; against a running meter the writes land
on the meter (read back by another client), the meter's refusals are one line naming what was
refused, and a push without destination says it is not sent."""
from __future__ import annotations

import json

import pytest

from client_cli import as_client, ok, one_error_line, smartmeter
from meterproc import free_port, start_meter
from smartmeter.cosem.obis import Obis


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = start_meter(tmp_path_factory.mktemp("push-cli") / "meter")
    yield m
    m.stop()


def get_json(meter, target: str):
    return json.loads(ok(as_client(meter, "data_readout", "--json", "get", target)))["value"]


@pytest.mark.parametrize("args, message", [
    (["push-setup", "interval1", "--to", "udp:192.0.2.1:4060"], "error: --to 'udp:192.0.2.1:4060' is not an address"),
    (["push-setup", "interval1", "--to", "tcp:[2001:db8::1]:4060"], "is not an address"),
    (["push-setup", "interval1", "--to", "tcp:192.0.2.1"], "is not an address"),
    (["push-setup", "interval1", "--to", "tcp:192.0.2.1:0"], "is not an address"),
    (["push-setup", "interval1", "--to", "tcp:300.0.2.1:4060"], "is not an address"),
    (["push-setup", "interval1", "--to", "192.0.2.1:4060"], "error: --to '192.0.2.1:4060' is not a push destination"),
    (["push-setup", "interval1", "--to", "http://example.org"], "is not a push destination"),
    # the consumer push goes to the H1 port only: 0-2:24.6.0.255, broadcast FF, first CI 00 (§10.5)
    (["push-setup", "consumer", "--to", "mbus:0-1:24.6.0.255:FF:00"],
     "error: --to 'mbus:0-1:24.6.0.255:FF:00' is not an address: wired M-Bus: 0-1:24.6.0.255 is not the consumer"),
    (["push-setup", "consumer", "--to", "mbus:0-2:24.6.0.255:05:00"], "broadcast address FF, not 05"),
    (["push-setup", "consumer", "--to", "mbus:0-2:24.6.0.255.FF.01"], "transport CI starts at 00, not 01"),
    (["push-setup", "consumer", "--to", "mbus:0-2:24.6.0.255"], "is not an address"),
    (["push-setup", "interval1", "--retries", "256"], "256 is not in the range 0<=x<=255"),
    (["push-setup", "interval9"], "error: 'interval9' is not a push setup"),
    (["push-setup", "1-0:1.8.0.255"], "error: '1-0:1.8.0.255' is not a push setup"),
    (["push", "1-0:1.8"], "error: '1-0:1.8' is not an OBIS code"),
    (["push-schedule", "alarm", "--every", "15m"], "error: alarm (0-4:25.9.0.255) has no push action scheduler"),
    (["push-schedule", "interval1", "--every", "7m"], "error: --every '7m' is not an interval that divides a day"),
    (["push-schedule", "interval1", "--every", "0s"], "is not an interval that divides a day"),
    (["push-schedule", "interval1", "--every", "1s"], "error: 60 execution times; 0-1:15.0.4.255 holds 32"),
    (["push-schedule", "interval1", "--every", "1h", "--off"], "error: --every, --at and --off exclude each other"),
    (["push-schedule", "interval1", "--at", "24:00"], "error: --at '24:00' is not a time of day"),
    (["push-schedule", "interval1", "--at", "6"], "error: --at '6' is not a time of day"),
])
def test_a_mistake_is_one_line_before_the_meter_is_asked(args, message):
    # nothing listens on this port: the command line is checked first
    line = one_error_line(smartmeter("client", "--port", str(free_port()), "--timeout", "2", *args))
    assert message in line, line


def test_a_push_setup_shows_as_the_meter_holds_it(meter):
    shown = ok(as_client(meter, "data_readout", "push-setup", "interval2")).splitlines()
    assert shown[0] == "0-2:25.9.0.255 push setup interval-2"
    assert shown[1:6] == ["  destination: none (the push is not sent)", "  retries: 3", "  repetition delay: 30 s",
                          "  randomisation: 0 s", "  window: always open"]
    entries = get_json(meter, "0-2:25.9.0.255:2")  # [class_id, logical name (hex), attribute, data_index]
    assert shown[6] == f"  objects ({len(entries)}):"
    assert [line.split()[0] for line in shown[7:]] == [f"{Obis.from_bytes(bytes.fromhex(ln))}:{attribute}"
                                                      for _, ln, attribute, _ in entries]
    as_json = json.loads(ok(as_client(meter, "data_readout", "push-setup", "0-2:25.9.0.255", "--json")))
    assert as_json["destination"] == "none" and as_json["number_of_retries"] == 3
    assert [[o["class_id"], o["attribute"], o["data_index"]] for o in as_json["push_object_list"]] == [
        [e[0], e[2], e[3]] for e in entries]


def test_written_settings_land_on_the_meter_and_none_takes_the_destination_away(meter):
    as_json = json.loads(ok(as_client(meter, "management", "--json", "push-setup", "interval2", "--to",
                                      "udp:[::1]:4060", "--retries", "5", "--delay", "45", "--randomisation", "7")))
    assert (as_json["destination"], as_json["number_of_retries"], as_json["repetition_delay"],
            as_json["randomisation_start_interval"]) == ("udp:[::1]:4060", 5, 45, 7)
    # as another client reads the attributes: transport UDP (1), the address as ASCII, message 0
    assert get_json(meter, "0-2:25.9.0.255:3") == [1, b"[::1]:4060".hex(), 0]
    assert [get_json(meter, f"0-2:25.9.0.255:{a}") for a in (5, 6, 7)] == [7, 5, 45]

    text = ok(as_client(meter, "management", "push-setup", "interval2", "--to", "none"))
    assert text.splitlines()[0] == "wrote 0-2:25.9.0.255:3 send_destination_and_method: none"
    assert get_json(meter, "0-2:25.9.0.255:3") == [1, "", 0]
    assert get_json(meter, "0-2:25.9.0.255:6") == 5  # what was not given is left as it was


def test_the_consumer_push_destination_may_be_written_with_dots(meter):
    # catalog §7: the text says '.' separates the three parts, the example ':'; both are taken
    text = ok(as_client(meter, "management", "push-setup", "consumer", "--to", "mbus:0-2:24.6.0.255.FF.00"))
    assert text.splitlines()[0] == "wrote 0-6:25.9.0.255:3 send_destination_and_method: mbus:0-2:24.6.0.255.FF.00"
    assert get_json(meter, "0-6:25.9.0.255:3") == [201, b"0-2:24.6.0.255.FF.00".hex(), 0]


def test_a_client_that_may_not_write_is_refused_in_one_line_and_nothing_changes(meter):
    before = get_json(meter, "0-3:25.9.0.255:3")
    line = one_error_line(as_client(meter, "data_readout", "push-setup", "interval3", "--to", "tcp:192.0.2.7:4060"))
    assert line.startswith("error: refused: 0-3:25.9.0.255:3 send_destination_and_method tcp:192.0.2.7:4060: "), line
    assert get_json(meter, "0-3:25.9.0.255:3") == before
    line = one_error_line(as_client(meter, "data_readout", "push", "interval3"))
    assert line.startswith("error: refused: 0-3:25.9.0.255 method 1 push: "), line


TIME_ANY_DAY = "ffffffffff"  # date octet-string(5): year, month, day, weekday not specified


def times(hex_times: list[str]) -> list[list[str]]:
    return [[t, TIME_ANY_DAY] for t in hex_times]


def test_push_schedules_are_written_as_execution_times_of_every_day(meter):
    shown = ok(as_client(meter, "management", "push-schedule", "interval1", "--every", "15m"))
    assert shown.splitlines() == [
        "0-1:15.0.4.255 push action scheduler of interval-1 (0-1:25.9.0.255), type 5: 4 execution time(s), every day",
        "  *:00:00  *-*-*", "  *:15:00  *-*-*", "  *:30:00  *-*-*", "  *:45:00  *-*-*"]
    # time octet-string(4): hour (ff: any), minute, second, hundredths
    assert get_json(meter, "0-1:15.0.4.255:4") == times(["ff000000", "ff0f0000", "ff1e0000", "ff2d0000"])

    ok(as_client(meter, "management", "push-schedule", "interval1", "--at", "06:30", "--at", "18:00:15"))
    assert get_json(meter, "0-1:15.0.4.255:4") == times(["061e0000", "12000f00"])
    ok(as_client(meter, "management", "push-schedule", "interval1", "--every", "2h"))
    assert get_json(meter, "0-1:15.0.4.255:4") == times([f"{hour:02x}000000" for hour in range(0, 24, 2)])
    ok(as_client(meter, "management", "push-schedule", "interval1", "--every", "1m"))
    assert get_json(meter, "0-1:15.0.4.255:4") == times(["ffff0000"])
    shown = ok(as_client(meter, "management", "push-schedule", "interval1", "--off"))
    assert shown.endswith("type 5: no execution time (not pushed on schedule)\n")
    assert get_json(meter, "0-1:15.0.4.255:4") == []

    as_json = json.loads(ok(as_client(meter, "data_readout", "--json", "push-schedule", "interval1")))
    assert as_json == {"scheduler": "0-1:15.0.4.255", "setup": "0-1:25.9.0.255", "name": "interval-1", "type": 5,
                       "execution_time": []}


def test_the_consumer_push_scheduler_takes_60_times(meter):
    ok(as_client(meter, "management", "push-schedule", "consumer", "--every", "1s"))
    assert get_json(meter, "0-4:15.0.4.255:4") == times([f"ffff{second:02x}00" for second in range(60)])
    ok(as_client(meter, "management", "push-schedule", "consumer", "--off"))


def test_the_meters_own_refusal_names_the_attribute(meter):
    # a scheduler of type 1 holds one execution time: the meter refuses four with other-reason
    ok(as_client(meter, "management", "set", "0-3:15.0.4.255:3", "enum:1"))
    try:
        line = one_error_line(as_client(meter, "management", "push-schedule", "interval3", "--every", "15m"))
        assert line.startswith("error: refused: 0-3:15.0.4.255:4 execution_time (4 times): other-reason"), line
        assert get_json(meter, "0-3:15.0.4.255:4") == []
    finally:
        ok(as_client(meter, "management", "set", "0-3:15.0.4.255:3", "enum:5"))


def test_a_push_without_destination_says_it_is_not_sent(meter):
    result = as_client(meter, "management", "push", "power-down")
    assert ok(result) == "0-5:25.9.0.255 power-down: push started (to none)\n"
    assert result.stderr.startswith("note: power-down has no destination: the meter does not send it")


@pytest.mark.parametrize("command", ["push-setup", "push-schedule", "push"])
def test_every_push_command_has_help(command):
    result = smartmeter("client", command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout and "SETUP" in result.stdout
