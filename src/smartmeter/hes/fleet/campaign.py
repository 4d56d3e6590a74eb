"""Campaigns: a set of meters to read (or to give new keys), one job each, tracked in the store to one outcome each.

`start` writes the campaign and its jobs in one transaction, then publishes one message per
job. The message id is the job's, so publishing again (after a crash of `start`, or by
`resume`) within the broker's duplicate window adds nothing; a job whose message was already
taken is only ever done once because its outcome is written once (state 'queued' → 'done' or
'failed').
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable, Sequence

from smartmeter.errors import SmartmeterError
from smartmeter.hes.fleet.broker import LANES, Broker, BrokerUnavailable, Job
from smartmeter.hes.store.pg import FleetStore, StoreError

__all__ = ["PublishCutShort", "start_campaign", "retry_failed", "resume_campaign"]


class PublishCutShort(SmartmeterError):
    """NATS stopped taking the jobs of a campaign (a full store, a broker away too long)."""


PUBLISH_AT_ONCE = 100  # publications awaiting their acknowledgement at a time


async def _publish(broker: Broker, store_id: str, campaign: int, meter_ids: Sequence[int], lane: str, suffix: str,
                   say: Callable[[str], None] | None, patience: float = 300.0, kind: str = "read") -> int:
    """Publish the jobs; PublishCutShort (after `patience` s of refusals) says how many NATS
    took: the others stay queued in the store for `campaign resume`."""
    taken = 0
    for at in range(0, len(meter_ids), PUBLISH_AT_ONCE):
        jobs = [Job(campaign, meter_id, kind) for meter_id in meter_ids[at:at + PUBLISH_AT_ONCE]]
        results = await asyncio.gather(*(broker.publish(LANES[lane], job.to_bytes(),
                                                        f"{store_id}:{job.message_id}{suffix}", say=say,
                                                        patience=patience) for job in jobs), return_exceptions=True)
        refused = next((r for r in results if isinstance(r, BrokerUnavailable)), None)
        other = next((r for r in results if isinstance(r, BaseException) and not isinstance(r, BrokerUnavailable)),
                     None)
        taken += sum(1 for r in results if not isinstance(r, BaseException))
        if other is not None:
            raise other
        if refused is not None:
            raise PublishCutShort(f"campaign {campaign}: NATS took {taken} of {len(meter_ids)} jobs ({refused}); "
                                  f"`smartmeter hes campaign resume {campaign}` publishes the rest when it has room")
    return taken


async def start_campaign(store: FleetStore, broker: Broker, *, name: str, cell: str | None = None,
                         serials: Sequence[str] | None = None, lane: str = "bulk",
                         say: Callable[[str], None] | None = None, patience: float = 300.0,
                         kind: str = "read") -> tuple[int, int]:
    """A campaign of `kind` ("read", or "key_change": new unicast keys for each meter) over
    the meters selected (all when neither cell nor serials): (id, jobs)."""
    meters = await store.meter_ids(cell=cell, serials=serials)
    if serials:
        missing = sorted(set(serials) - {serial for _, serial, _ in meters})
        if missing:
            raise StoreError(f"no meter with serial {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} "
                             "in the store; import them with `smartmeter hes db import-fleet`")
    if not meters:
        raise StoreError("no meters selected: the store has none" + (f" in cell {cell}" if cell else ""))
    ids = [meter_id for meter_id, _, _ in meters]
    campaign = await store.create_campaign(name, kind, {"cell": cell, "serials": list(serials or []),
                                                        "lane": lane}, ids)
    await _publish(broker, await store.store_id(), campaign, ids, lane, "", say, patience, kind)
    return campaign, len(ids)


async def resume_campaign(store: FleetStore, broker: Broker, campaign: int, say=None) -> int:
    """Publish the jobs of `campaign` that have no outcome yet again (after `start` was cut
    short); within the duplicate window the broker drops the ones it already has."""
    status = await store.campaign_status(campaign)
    ids = [r["meter_id"] for r in await store.pool.fetch(
        "SELECT meter_id FROM job WHERE campaign_id = $1 AND state = 'queued' ORDER BY meter_id", campaign)]
    return await _publish(broker, await store.store_id(), campaign, ids, status["params"].get("lane", "bulk"), "",
                          say, kind=status["kind"])


async def retry_failed(store: FleetStore, broker: Broker, campaign: int, say=None) -> int:
    """Failed jobs of `campaign` go back to queued, with their attempts reset, and are published anew."""
    status = await store.campaign_status(campaign)
    ids = await store.reopen_failed(campaign)
    # a new message id: the failed job's own may still be in the duplicate window
    return await _publish(broker, await store.store_id(), campaign, ids, status["params"].get("lane", "bulk"),
                          f":retry:{time.time_ns():x}", say, kind=status["kind"])
