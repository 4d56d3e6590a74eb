"""Fixtures shared by the test suite."""
from __future__ import annotations

import pytest

from meterproc import MeterProcess, start_meter


@pytest.fixture(scope="session")
def meter(tmp_path_factory) -> MeterProcess:
    m = start_meter(tmp_path_factory.mktemp("meter"))
    yield m
    m.stop()
