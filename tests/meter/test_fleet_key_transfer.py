"""Fleet meters change the management client's keys with key_transfer (IC 64 method 2 of
0-0:43.0.1.255) as docs/fleet.md says: the new EK and AK wrapped (RFC 3394) under the first
16 bytes of the master key, derived as documented; SUCCESS under the old keys, then only the
new ones; a new EK's counters start afresh; a key wrapped under another key is refused and
changes nothing. Expectations follow from the documentation, not from the fleet's functions."""
from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from smartmeter.dlms.client import AccessDenied, AssociationRefused, ClientSecurity, CounterStore
from smartmeter.dlms.security.keys import KeyId, KeyTransfer, encode_key_transfer
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink

from test_fleet import A_PLUS, CLIENT_TITLE, energy, entry, import_power, meter_time, run, scenario, serving

SECURITY_SETUP = "0-0:43.0.1.255"


def documented_master_key(seed: int, i: int) -> bytes:
    """HKDF-SHA256 of the seed (8 bytes big-endian, signed), salt "smartmeter fleet", info "meter {i} master"."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"smartmeter fleet",
                info=f"meter {i} master".encode()).derive(seed.to_bytes(8, "big", signed=True))


def connect(m: dict, ek: bytes, ak: bytes, counters: CounterStore) -> MeterClient:
    security = ClientSecurity(mechanism=m["mechanism"], suite=m["suite"], policy=m["policy"], ek=ek, ak=ak,
                              client_system_title=CLIENT_TITLE, invocation_counter=counters)
    return MeterClient(WrapperLink(m["host"], m["port"], client_sap=m["client_sap"], timeout=10),
                       mechanism=m["mechanism"], security=security)


def transfer(kek: bytes, ek: bytes, ak: bytes):
    return encode_key_transfer([KeyTransfer.wrap(kek, KeyId.GLOBAL_UNICAST_ENCRYPTION, ek),
                                KeyTransfer.wrap(kek, KeyId.AUTHENTICATION, ak)])


def test_key_transfer_replaces_the_management_keys_and_their_counters_start_afresh():
    sc = scenario(2, seed=5)
    new_ek, new_ak = os.urandom(16), os.urandom(16)

    async def go():
        async with serving(sc, with_counters=True) as process:
            m = entry(sc, 1)
            master = documented_master_key(5, 1)
            assert m["master"] == master.hex().upper()  # the manifest lists it
            old_ek, old_ak = bytes.fromhex(m["ek"]), bytes.fromhex(m["ak"])
            client = connect(m, old_ek, old_ak, CounterStore(last_used=99))
            await client.connect()
            # wrapped under another key: refused, nothing changes
            with pytest.raises(AccessDenied) as refused:
                await client.action(SECURITY_SETUP, 2, transfer(os.urandom(16), new_ek, new_ak), class_id=64)
            assert refused.value.result.name == "OTHER_REASON"
            assert (await client.get(A_PLUS, 2, class_id=3)).value >= 0  # still under the old keys
            # wrapped under the master key's first 16 bytes (suite 0): SUCCESS under the old keys
            await client.action(SECURITY_SETUP, 2, transfer(master[:16], new_ek, new_ak), class_id=64)
            assert process.report()["meters"][1]["key_changes"] == 1
            # from now on the new keys, their counters from 0 again (the old ones were above 100)
            fresh = CounterStore()
            client.association.rekey(ek=new_ek, ak=new_ak, counters=fresh)
            before = meter_time(sc)
            value = (await client.get(A_PLUS, 2, class_id=3)).value
            assert energy(import_power(1), before) <= value <= energy(import_power(1), meter_time(sc))
            await client.close()
            # the old keys are refused; the new ones associate, counters going on from the last
            with pytest.raises(AssociationRefused):
                async with connect(m, old_ek, old_ak, CounterStore(last_used=10_000)):
                    pass
            async with connect(m, new_ek, new_ak, fresh) as again:
                assert (await again.get(A_PLUS, 2, class_id=3)).value >= value
            used = fresh.last_used
            meter = process.report()["meters"][1]
            # every counter under the new key once, from 0; none reused or refused; meter 0 untouched
            assert sorted(meter["counters"]) == list(range(0, used + 1))
            assert meter["key_counters_seen"] == used + 1
            assert (meter["reused_count"], meter["refused_count"]) == (0, 0)
            assert process.report()["meters"][0]["key_changes"] == 0

    run(go())
