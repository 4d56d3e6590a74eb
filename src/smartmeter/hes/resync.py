"""Continuing above a meter's frame counter after its power failure (companion standard
§3.5.4, Appendix 1).

The meter reserves its receive counters in durable blocks: after a power failure (not after a
clean stop) it refuses up to one block of counters above the last it really accepted, and an
AARQ under such a counter is refused like a replay. The frame counter object of each client
(IC 12544, 0-0:43.1.<client SAP>.255) tells a head-end where the meter stands: the public
client may execute get_frame_counter when it gives the secured client's system title as
calling-AP-title, and the answer is an HMAC-SHA256 with that client's authentication key over
both system titles, a fresh 64-byte challenge and the counter, so the value cannot be faked
by anyone without the key. The head-end then moves its own counter above it.
"""
from __future__ import annotations

import secrets

from smartmeter.cosem.data import Data
from smartmeter.dlms.client import ClientError, ClientSecurity
from smartmeter.dlms.security.errors import SecurityError
from smartmeter.dlms.security.frame_counter import FRAME_COUNTER_CHALLENGE_LENGTH, verify_frame_counter_response
from smartmeter.hes.client import MeterClient
from smartmeter.hes.credentials import Credentials

FRAME_COUNTER_CLASS = 12544
GET_FRAME_COUNTER = 1


def frame_counter_obis(client_sap: int) -> str:
    return f"0-0:43.1.{client_sap}.255"


async def read_frame_counter(public_link, credentials: Credentials) -> int:
    """The last counter the meter holds as accepted from `credentials`' client, read over
    `public_link` (a link for the public client, SAP 16) and checked with the client's AK."""
    return await read_client_counter(public_link, credentials.client_sap, credentials.security.client_system_title,
                                     credentials.security.ak)


async def read_client_counter(public_link, client_sap: int, client_system_title: bytes | None,
                              ak: bytes | None, server_system_title: bytes | None = None) -> int:
    """The last counter the meter holds as accepted from client `client_sap` (system title
    `client_system_title`), read over `public_link` and checked with that client's `ak`;
    ClientError if it cannot be read or does not verify. With `server_system_title` (the
    meter meant) the answer must be that meter's: the HMAC covers the server's system title,
    so an answer relayed from another meter holding the same AK does not verify. Without it,
    the title the unauthenticated AARE names is taken."""
    title = client_system_title
    if title is None or ak is None:
        raise ClientError("the frame counter readout needs the client's system title and authentication key")
    challenge = secrets.token_bytes(FRAME_COUNTER_CHALLENGE_LENGTH)
    async with MeterClient(public_link, security=ClientSecurity(client_system_title=title)) as client:
        answer = await client.action(frame_counter_obis(client_sap), GET_FRAME_COUNTER,
                                     Data.octet_string(challenge), class_id=FRAME_COUNTER_CLASS)
        server_title = server_system_title or client.association.server_system_title
    try:
        response, counter = (item.value for item in answer.value)
        return verify_frame_counter_response(ak, server_title, title, challenge, counter, response)
    except (SecurityError, TypeError, ValueError, AttributeError):
        raise ClientError("the meter's frame counter answer does not verify with this client's key") from None


async def resynchronise(public_link, credentials: Credentials) -> int:
    """Read the meter's frame counter and move the credentials' counter file above it; returns
    the meter's counter. The counter only ever moves forward."""
    counter = await read_frame_counter(public_link, credentials)
    store = credentials.security.invocation_counter
    if not hasattr(store, "advance_to"):
        raise ClientError("these credentials keep no counter file to move")
    store.advance_to(counter)
    return counter
