"""L6 retrieval of stored data: after a load-profile entry was changed in the stopped meter's
store, a DLMS client (gurux-dlms, independent of this code) sees the damage flagged: the fatal
error register 0-0:97.97.128.255 shows bit 0x04 (store damaged). The meter flags the store as a
whole; it does not withhold or mark the single entry (see docs/welmec/blocks.toml, L6)."""
from __future__ import annotations

import sqlite3

import pytest

from welmec_support import FATAL_ERROR_REGISTER, gurux_read_data, start_meter_from

STORE_DAMAGED = 0x04


def _fatal_over_dlms(data_dir) -> int:
    meter = start_meter_from(None, data_dir)
    try:
        return int(gurux_read_data(meter.wrapper_port, FATAL_ERROR_REGISTER))
    finally:
        meter.stop()


@pytest.mark.welmec("L6", "P5", "U5")
def test_a_changed_profile_entry_is_flagged_over_dlms(tmp_path):
    """A stored load-profile entry with one +A byte changed: at the next start, gurux-dlms reads fatal error bit 0x04 over the wrapper; before the change it read 0."""
    data_dir = tmp_path / "meter-data"
    assert _fatal_over_dlms(data_dir) == 0  # the control: a fresh meter with 30 days of profile
    with sqlite3.connect(data_dir / "legal.sqlite3") as db:
        seq, payload = db.execute("SELECT seq, payload FROM chain_entry WHERE tbl = 'lp1' ORDER BY seq LIMIT 1 OFFSET 100").fetchone()
        changed = bytearray(payload)
        changed[8] ^= 0x01  # status byte, then +A big-endian: its lowest byte
        db.execute("UPDATE chain_entry SET payload = ? WHERE tbl = 'lp1' AND seq = ?", (bytes(changed), seq))
    assert _fatal_over_dlms(data_dir) & STORE_DAMAGED
