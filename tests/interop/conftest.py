"""Every interop test gets a meter of its own (function scope): invocation counters, the
one-association lock of the optical port, a restart or a clock change made by one test
never reach another, and each test passes or fails on its own."""
from __future__ import annotations

import pytest

from meterproc import MeterProcess, start_meter


@pytest.fixture
def meter(tmp_path) -> MeterProcess:
    m = start_meter(tmp_path / "meter")
    yield m
    m.stop()
