"""Continuing above a meter's frame counter when it refuses ours (a store restored from a
backup, a counter row lost): the head-end at scale's side of `smartmeter.hes.resync`.

The meter's frame counter object of our client (IC 12544, 0-0:43.1.<client SAP>.255) is read
over the public client (SAP 16, no security) of the same host, port and server SAP: the answer
is an HMAC-SHA256 under our client's authentication key over both system titles, a fresh
challenge and the counter, so only a value that verifies moves the store's counter, and only
upward. A meter refuses an old counter in two ways: in a request (exception-response
invocation-counter-error, whose counter is unprotected and therefore not used), or by refusing
the ciphered AARQ carrying it, which a refusal for other keys looks the same as; the readout
tells the two apart, since it verifies only under the keys the meter holds. The answer is
checked against the system title of the meter meant (the grant's), not the one the public
client's unauthenticated AARE names, so an answer from another meter sharing the AK (a relay,
a wrong address) moves nothing. The readout's link comes from the worker's `link_factory`
when it has one (asked for the public client: the grant with client_sap 16).

The same holds for the NEW keys of a key change cut short (`under_new_keys`): a meter that
took them may have seen more of their generation's counters than the store reserved (a store
restored from a backup taken meanwhile); the readout verified with their AK moves that
generation's counter, and proves the meter holds them.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Awaitable, Callable

from smartmeter.dlms.client import AssociationRefused, ClientError, InvocationCounterError
from smartmeter.errors import SmartmeterError
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.resync import read_client_counter
from smartmeter.ratelog import RateLimitedLog

__all__ = ["CounterBehindMeter", "PUBLIC_SAP", "meter_counter", "resync_counter", "under_new_keys"]

log = logging.getLogger(__name__)
say = RateLimitedLog(log)

PUBLIC_SAP = 16


class CounterBehindMeter(InvocationCounterError):
    """The meter refused our association, and its frame counter object (verified with our
    authentication key) holds a counter at or above the one we sent: `meter_counter` is that
    verified counter."""


async def meter_counter(grant, client_system_title: bytes, timeout: float, *, link_factory=None) -> int:
    """The last counter of ours the meter of `grant` accepted, read from its frame counter
    object over the public client and verified with the grant's AK and system title;
    ClientError if it cannot be read in `timeout` seconds or does not verify. `link_factory`
    (grant, timeout) → link, as the worker's, is given the grant with the public client's SAP."""
    link = None
    try:
        if link_factory is not None:
            link = link_factory(dataclasses.replace(grant, client_sap=PUBLIC_SAP), timeout)
        else:
            link = WrapperLink(grant.host, grant.port, client_sap=PUBLIC_SAP, server_sap=grant.server_sap,
                               timeout=timeout)
        async with asyncio.timeout(timeout):
            return await read_client_counter(link, grant.client_sap, client_system_title, grant.keys.get("ak"),
                                             grant.system_title)
    except TimeoutError:
        raise ClientError(f"the frame counter readout took longer than {timeout:g} s") from None
    except ClientError:
        raise
    except (SmartmeterError, OSError) as exc:
        raise ClientError(f"the frame counter readout failed: {exc}") from None
    finally:
        try:
            if link is not None:
                await link.close()
        except (SmartmeterError, OSError, AttributeError):
            pass  # never opened, or already closed by the client


def under_new_keys(grant):
    """`grant` as a session under its NEW keys sees it: their keys (a readout verifies with
    their AK) and their generation (whose counter a resync moves)."""
    return dataclasses.replace(grant, keys=grant.new_keys, key_generation=grant.new_generation)


async def resync_counter(store, grant, refusal: InvocationCounterError | AssociationRefused, client_system_title: bytes,
                         timeout: float, call: Callable[[Awaitable], Awaitable] | None = None, *,
                         link_factory=None) -> int | None:
    """After the meter of `grant` refused our counter (or an association, which an old counter
    and other keys look alike in): its verified counter (the refusal's own when
    `CounterBehindMeter` carries one, else read now, through `link_factory` if given), and
    the store's counter of the grant's generation moved up to it (never down). None when it
    cannot be read or does not verify: nothing moves."""
    if isinstance(refusal, CounterBehindMeter):
        counter = refusal.meter_counter
    else:
        try:
            counter = await meter_counter(grant, client_system_title, timeout, link_factory=link_factory)
        except ClientError as exc:
            if isinstance(refusal, InvocationCounterError):  # a refused association: other keys, as likely
                say("resync.unverified", "meter %s refused our invocation counter and its frame counter could not "
                    "be read or verified (%s): the store's counter is left as it is", grant.serial, exc)
            return None
    advance = store.advance_counter(grant.meter_id, grant.key_generation, counter)
    await (call(advance) if call is not None else advance)
    return counter
