"""The head-end's fleet store: PostgreSQL through asyncpg, with versioned SQL migrations."""
from smartmeter.hes.store.pg import (
    FleetStore, LeaseLost, MeterBusy, MeterRecord, SessionGrant, StoreError, StoreUnavailable, UnknownMeter,
)

__all__ = ["FleetStore", "LeaseLost", "MeterBusy", "MeterRecord", "SessionGrant", "StoreError",
           "StoreUnavailable", "UnknownMeter"]
