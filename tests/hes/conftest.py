"""Fixtures of the head-end tests."""
from __future__ import annotations

import pytest

from fleet_support import HeadEnd


@pytest.fixture
def head_end(tmp_path, pg_dsn, nats_url):
    h = HeadEnd(tmp_path, pg_dsn, nats_url)
    yield h
    h.close()
