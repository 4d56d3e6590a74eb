"""What the interop tests do to their meter process beside the DLMS peer: change its world over
the control channel (as `smartmeter sim` does), read and wait for its clock, and keep gurux-dlms's
prints out of the test output."""
from __future__ import annotations

import contextlib
import io
import time

from smartmeter.meter.control import request


def quiet(fn, *args):
    """gurux-dlms prints a line per protected message; keep it out of the test output."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def control(meter, **fields) -> dict:
    """One control channel request (`input=...` or `status=True`); -> the meter's status after it."""
    answer = request(meter.data_dir, fields)
    assert answer["ok"], answer
    return answer["status"]


def meter_now(meter) -> int:
    return control(meter, status=True)["clock"]["utc"]


def wait_until(meter, utc: float, timeout: float = 30.0) -> None:
    """Until the meter's clock reached `utc`."""
    deadline = time.monotonic() + timeout
    while meter_now(meter) < utc:
        assert time.monotonic() < deadline, f"the meter's clock did not reach {utc}"
        time.sleep(0.05)
