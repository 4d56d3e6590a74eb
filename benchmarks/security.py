"""Security benchmarks: HLS 7 association set-ups per second, and a suite-1 protected load-profile readout.

1. In-process (sans-io, no sockets): our `ClientAssociation` against our meter's server,
   the whole set-up each time: ciphered AARQ -> AARE, HLS 7 pass 3/4 (reply_to_HLS_authentication),
   ciphered RLRQ -> RLRE. Management client (SAP 1), suite 1, policy 0x6C, demo credentials.
   Profiled with cProfile to show what limits the rate.
2. Over a real TCP socket against a meter process (`python -m smartmeter meter run`): the same
   set-up (connect, AARQ, pass 3/4, RLRQ, close) with our asyncio `MeterClient` and with gurux's
   `GXDLMSSecureClient` (tests/interop/gurux_secure_peer.py), and the ratio.
3. The whole load profile 1-0:99.1.0.255 (attribute 3 then attribute 2, no selection) read by
   the data readout client (HLS 7, suite 1, authenticated + encrypted) with our client and with
   gurux, from meters back-filled with 30 days (2880 entries) and 60 days (5760 entries).
   Three ratios, because the two clients do different work for the same bytes:
   - as each client comes: ours returns row tuples with the clock as its 12 raw bytes and uses
     OpenSSL's AES-GCM; gurux decrypts with its own pure-Python AES-GCM and turns every clock
     into a GXDateTime (a datetime inside);
   - same output: ours also turns every clock into an aware datetime (timed and added);
   - protocol work only: each client's time minus its own AES-GCM calls and minus its clock
     conversions (both timed by wrapping those functions during the run).

Both clients keep their invocation counters in memory here (gurux has no durable store; ours
would fsync a sidecar file before each counter). gurux-dlms is only a black-box peer; the
product never imports it.

    .venv/bin/python benchmarks/security.py [--associations N] [--gurux-associations N] [--runs N]
                                            [--skip-60-days] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import contextlib
import dataclasses
import io
import itertools
import json
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "interop")]

from smartmeter.dlms.client import ClientAssociation  # noqa: E402
from smartmeter.hes.client import MeterClient  # noqa: E402
from smartmeter.hes.connection import WrapperLink  # noqa: E402
from smartmeter.hes.credentials import load_credentials  # noqa: E402

LOAD_PROFILE = "1-0:99.1.0.255"


class Counters:
    """One invocation-counter sequence per client, shared by our client and gurux's in turn."""

    def __init__(self) -> None:
        self.next = itertools.count(1)

    def __call__(self) -> int:
        return next(self.next)

    def skip_to(self, value: int) -> None:
        self.next = itertools.count(value)


def security_of(credentials_path: Path, counters: Counters):
    return dataclasses.replace(load_credentials(credentials_path).security, invocation_counter=counters)


# -- 1. in-process -----------------------------------------------------------------------------


def in_process_associations(count: int, profile_top: int) -> dict:
    from smartmeter.meter.runtime import Meter, MeterConfig

    with tempfile.TemporaryDirectory() as tmp:
        meter = Meter(MeterConfig(data_dir=Path(tmp) / "meter", backfill_days=1))
        try:
            security = security_of(Path(tmp) / "meter" / "credentials" / "management.json", Counters())

            def one() -> None:
                server = meter.server.association(1, "lan")
                client = ClientAssociation(security=security)
                client.on_aare(server.handle(client.aarq()))
                exchange = client.hls_exchange()
                request = exchange.first()
                while request is not None:
                    request = exchange.feed(server.handle(request))
                assert client.authenticated and server.authenticated
                rlre = server.handle(client.release_request())
                assert rlre[:1] == b"\x63" and not server.associated

            def timed(n: int) -> tuple[float, float]:
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(n):
                    one()
                return time.perf_counter() - wall, time.process_time() - cpu

            _count_commits(meter.store)
            one()  # warm-up (and a check that it works)
            commits_before = _commits(meter.store)
            # five chunks: the whole loop's rate, and the best chunk's (what one core does when
            # the other work on a shared machine leaves it alone for a moment)
            chunk = max(count // 5, 1)
            chunks = [timed(chunk) for _ in range(5)]
            wall, cpu = sum(w for w, _ in chunks), sum(c for _, c in chunks)
            best_wall = max(chunk / w for w, _ in chunks)
            count = chunk * 5
            commits = (_commits(meter.store) - commits_before) / count  # the reserved blocks make most 0

            # what the durable frame-counter commits cost: the same loop with MeterStore.set_counter
            # kept in memory (a what-if for this measurement only; the meter never runs like this)
            durable = meter.store.set_counter
            memory: dict[str, int] = {}
            meter.store.set_counter = memory.__setitem__
            try:
                wall_memory, cpu_memory = timed(count)
            finally:
                meter.store.set_counter = durable
            commit_seconds = _commit_cost(meter.store)

            profiler = cProfile.Profile()
            profiler.enable()
            timed(max(count // 2, 50))
            profiler.disable()
            profile = _top_costs(profiler, profile_top)
        finally:
            meter.close()
    return {"associations": count, "wall_seconds": wall, "cpu_seconds": cpu,
            "per_second_wall": count / wall, "per_second_cpu": count / cpu, "best_fifth_per_second_wall": best_wall,
            "store_commits_per_association": commits, "seconds_per_set_counter_commit": commit_seconds,
            "without_durable_counters": {"wall_seconds": wall_memory, "cpu_seconds": cpu_memory,
                                         "per_second_wall": count / wall_memory},
            "profile": profile}


def _commits(store) -> int:
    """Durable writes the store has made so far (set_counter and put are one commit each)."""
    return getattr(store, "_benchmark_commits", 0)


def _count_commits(store) -> None:
    for name in ("set_counter", "put"):
        original = getattr(store, name)

        def counting(*args, _original=original):
            store._benchmark_commits = getattr(store, "_benchmark_commits", 0) + 1
            return _original(*args)

        setattr(store, name, counting)


def _commit_cost(store, n: int = 200) -> float:
    start = time.perf_counter()
    for i in range(n):
        store.set_counter("benchmark.probe", i)
    return (time.perf_counter() - start) / n


COST_GROUPS = {
    # label: (file name ending, function name) of the pstats entries whose cumulative time counts
    "MeterStore.set_counter (durable frame counter, one SQLite commit each)": ("store.py", "set_counter"),
    "MeterStore.put (settings, one SQLite commit each)": ("store.py", "put"),
    "ECDSA sign (cryptography)": ("~", "<method 'sign' of 'cryptography.hazmat.bindings._rust.openssl.ec.ECPrivateKey' objects>"),
    "ECDSA verify (cryptography)": ("~", "<method 'verify' of 'cryptography.hazmat.bindings._rust.openssl.ec.ECPublicKey' objects>"),
    "AES-GCM protect (suites.protect_content)": ("suites.py", "protect_content"),
    "AES-GCM unprotect (suites.unprotect_content)": ("suites.py", "unprotect_content"),
    "PEM load of the meter's signing key (per pass 3)": ("security.py", "server_signing_key"),
    "ACSE BER decode (acse.decode_acse)": ("acse.py", "decode_acse"),
    "ACSE BER encode (AARQ/AARE/RLRQ/RLRE to_bytes)": ("acse.py", "to_bytes"),
}


def _top_costs(profiler: cProfile.Profile, top: int) -> dict:
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = [{"function": f"{Path(filename).name}:{line}({name})", "file": filename, "name": name, "calls": nc,
             "own_seconds": tt, "cumulative_seconds": ct}
            for (filename, line, name), (cc, nc, tt, ct, callers) in stats.stats.items()]
    groups = {}
    for label, (file_end, name) in COST_GROUPS.items():
        matching = [r for r in rows if r["file"].endswith(file_end) and r["name"] == name]
        groups[label] = {"seconds": sum(r["cumulative_seconds"] for r in matching),
                         "share": sum(r["cumulative_seconds"] for r in matching) / total if total else 0.0}
    for r in rows:
        del r["file"], r["name"]
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return {"total_seconds": total, "groups": groups,
            "top_own": sorted(rows, key=lambda r: -r["own_seconds"])[:top], "pstats": text.getvalue()}


# -- 2. and 3. over sockets -------------------------------------------------------------------


def _ours_associations(port: int, credentials: Path, counters: Counters, count: int) -> float:
    security = security_of(credentials, counters)
    creds = load_credentials(credentials)

    async def go() -> float:
        start = time.perf_counter()
        for _ in range(count):
            client = MeterClient(WrapperLink("127.0.0.1", port, creds.client_sap, creds.server_sap, 10),
                                 security=security)
            await client.connect()
            assert client.association.authenticated
            await client.close()
        return time.perf_counter() - start

    return asyncio.run(go())


def _gurux_client(port: int, credentials: Path, counters: Counters):
    from gurux_secure_peer import GuruxSecureClient

    return GuruxSecureClient(port, credentials, counters())


def _quiet(fn, *args):
    """gurux-dlms prints a line per protected message; keep it off the report."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def _gurux_done(client, counters: Counters) -> None:
    counters.skip_to(int(client.client.ciphering.invocationCounter) + 1)


def _gurux_associations(port: int, credentials: Path, counters: Counters, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        client = _gurux_client(port, credentials, counters)
        client.associate()
        client.close()
        _gurux_done(client, counters)
    return time.perf_counter() - start


class Stopwatch:
    """Wall time spent inside the functions it wraps (benchmark-only instrumentation), so a
    client's time can be split into AES-GCM, clock conversion and the rest."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, function, only=None):
        def timed(*args, **kwargs):
            if only is not None and not only(*args, **kwargs):
                return function(*args, **kwargs)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


@contextlib.contextmanager
def _patched(*replacements):
    """(owner, name, new value) for the duration; the old values come back afterwards."""
    old = [(owner, name, owner.__dict__[name]) for owner, name, _ in replacements]
    try:
        for owner, name, value in replacements:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in old:
            setattr(owner, name, value)


@dataclasses.dataclass
class Readout:
    seconds: float  # the whole readout (attributes 3 and 2), best run
    rows: int
    aes_gcm_seconds: float  # of that run, inside the client's AES-GCM
    clock_seconds: float  # of that run, turning clocks into date objects

    @property
    def protocol_seconds(self) -> float:
        return self.seconds - self.aes_gcm_seconds - self.clock_seconds


def _ours_profile(port: int, credentials: Path, counters: Counters, runs: int) -> tuple[Readout, Readout]:
    """(as it comes: clocks as bytes, same output: every clock also turned into a datetime)."""
    from smartmeter.cosem import axdr
    from smartmeter.dlms import client as client_module
    from smartmeter.dlms.apdu import ciphered

    security = security_of(credentials, counters)
    creds = load_credentials(credentials)
    gcm = Stopwatch()

    async def go() -> tuple[Readout, Readout]:
        best = same = None
        async with MeterClient(WrapperLink("127.0.0.1", port, creds.client_sap, creds.server_sap, 30),
                               security=security) as client:
            for _ in range(runs):
                gcm.seconds = 0.0
                start = time.perf_counter()
                columns, buffer = await client.profile(LOAD_PROFILE, rows=True)
                seconds = time.perf_counter() - start
                start = time.perf_counter()
                dated = [(axdr.decode_date_time(row[0]).to_datetime(), *row[1:]) for row in buffer]
                clock = time.perf_counter() - start
                assert len(dated) == len(buffer)
                if best is None or seconds < best.seconds:
                    best = Readout(seconds, len(buffer), gcm.seconds, 0.0)
                if same is None or seconds + clock < same.seconds:
                    same = Readout(seconds + clock, len(buffer), gcm.seconds, clock)
        return best, same

    # requests are protected in ciphered.py, responses opened in client.py: both AES-GCM
    with _patched((client_module, "unprotect_content", gcm.wrap(client_module.unprotect_content)),
                  (ciphered, "protect_content", gcm.wrap(ciphered.protect_content))):
        return asyncio.run(go())


def _gurux_profile(port: int, credentials: Path, counters: Counters, runs: int) -> Readout:
    from gurux_dlms.GXDLMSChippering import GXDLMSChippering
    from gurux_dlms.enums import DataType
    from gurux_dlms.internal._GXCommon import _GXCommon
    from gurux_dlms.objects import GXDLMSProfileGeneric

    gcm, clock = Stopwatch(), Stopwatch()
    dates = (DataType.DATETIME, DataType.DATE, DataType.TIME)

    def classmethod_of(owner, name):
        return owner.__dict__[name].__func__

    replacements = [
        (GXDLMSChippering, name, classmethod(gcm.wrap(classmethod_of(GXDLMSChippering, name))))
        for name in ("encryptAesGcm", "decryptAesGcm")
    ] + [(_GXCommon, "changeType", classmethod(clock.wrap(
        classmethod_of(_GXCommon, "changeType"), only=lambda cls, settings, value, type_: type_ in dates)))]
    client = _gurux_client(port, credentials, counters)
    client.sock.settimeout(60)
    best = None
    try:
        client.associate()
        with _patched(*replacements):
            for _ in range(runs):
                gcm.seconds = clock.seconds = 0.0
                profile = GXDLMSProfileGeneric(LOAD_PROFILE.replace("-", ".").replace(":", "."))
                start = time.perf_counter()
                client.read(profile, 3)
                client.read(profile, 2)
                seconds = time.perf_counter() - start
                if best is None or seconds < best.seconds:
                    best = Readout(seconds, len(profile.buffer), gcm.seconds, clock.seconds)
    finally:
        client.close()
        _gurux_done(client, counters)
    return best


def _prepared_meter(data_dir: Path, backfill_days: int):
    """A meter process whose first start back-filled `backfill_days` days of load profile."""
    from meterproc import start_meter
    from smartmeter.meter.runtime import Meter, MeterConfig

    if backfill_days != 30:  # `meter run` back-fills 30 days; other lengths are made in-process first
        Meter(MeterConfig(data_dir=data_dir, backfill_days=backfill_days)).close()
    return start_meter(data_dir)


def over_sockets(associations: int, gurux_associations: int, runs: int, days: list[int]) -> dict:
    out: dict = {"associations": {}, "load_profile": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, backfill in enumerate(days):
            meter = _prepared_meter(Path(tmp) / f"meter{backfill}", backfill)
            try:
                credentials = meter.data_dir / "credentials"
                if i == 0:
                    counters = Counters()
                    ours = _ours_associations(meter.wrapper_port, credentials / "management.json", counters,
                                              associations)
                    theirs = _quiet(_gurux_associations, meter.wrapper_port, credentials / "management.json", counters,
                                                 gurux_associations)
                    out["associations"] = {
                        "ours": {"count": associations, "seconds": ours, "per_second": associations / ours},
                        "gurux": {"count": gurux_associations, "seconds": theirs,
                                  "per_second": gurux_associations / theirs},
                        "ratio": (associations / ours) / (gurux_associations / theirs),
                    }
                counters = Counters()
                ours, ours_dated = _ours_profile(meter.wrapper_port, credentials / "data_readout.json", counters,
                                                 runs)
                theirs = _quiet(_gurux_profile, meter.wrapper_port, credentials / "data_readout.json", counters, runs)
                out["load_profile"].append({
                    "backfill_days": backfill, "rows_ours": ours.rows, "rows_gurux": theirs.rows,
                    "ours_seconds": ours.seconds, "gurux_seconds": theirs.seconds,
                    "ratio": theirs.seconds / ours.seconds,
                    "same_output": {"ours_seconds": ours_dated.seconds, "ours_clock_seconds": ours_dated.clock_seconds,
                                    "gurux_seconds": theirs.seconds,
                                    "ratio": theirs.seconds / ours_dated.seconds},
                    "protocol_only": {"ours_seconds": ours.protocol_seconds,
                                      "ours_aes_gcm_seconds": ours.aes_gcm_seconds,
                                      "gurux_seconds": theirs.protocol_seconds,
                                      "gurux_aes_gcm_seconds": theirs.aes_gcm_seconds,
                                      "gurux_clock_seconds": theirs.clock_seconds,
                                      "ratio": theirs.protocol_seconds / ours.protocol_seconds},
                })
            finally:
                meter.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--associations", type=int, default=300, help="in-process and our socket set-ups")
    parser.add_argument("--gurux-associations", type=int, default=20, help="gurux set-ups over the socket")
    parser.add_argument("--runs", type=int, default=3, help="load-profile readouts per client (best is kept)")
    parser.add_argument("--skip-60-days", action="store_true", help="only the 30-day (2880 entry) profile")
    parser.add_argument("--profile-top", type=int, default=15, help="functions shown from cProfile")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import gurux_dlms  # noqa: F401  (fail early if the peer is missing)

    in_process = in_process_associations(args.associations, args.profile_top)
    sockets = over_sockets(args.associations, args.gurux_associations, args.runs,
                           [30] if args.skip_60_days else [30, 60])
    result = {"python": platform.python_version(), "machine": platform.machine(),
              "in_process_hls7": {k: v for k, v in in_process.items() if k != "profile"},
              "in_process_profile": {k: v for k, v in in_process["profile"].items() if k != "pstats"},
              **sockets}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    ip = in_process
    print("HLS 7 association set-ups, in-process (sans-io), management client, suite 1:")
    print(f"  {ip['associations']} in {ip['wall_seconds']:.2f} s wall / {ip['cpu_seconds']:.2f} s CPU: "
          f"{ip['per_second_wall']:.0f}/s wall, {ip['per_second_cpu']:.0f}/s CPU; "
          f"best fifth of the loop {ip['best_fifth_per_second_wall']:.0f}/s wall")
    wm = ip["without_durable_counters"]
    print(f"  {ip['store_commits_per_association']:.3f} durable store commits per set-up, "
          f"{ip['seconds_per_set_counter_commit'] * 1e3:.2f} ms per set_counter commit on this disk")
    print(f"  what-if, frame counters kept in memory only: {wm['per_second_wall']:.0f}/s wall")
    a = sockets["associations"]
    print("HLS 7 association set-ups over TCP (wrapper) against a meter process:")
    print(f"  ours : {a['ours']['count']} in {a['ours']['seconds']:.2f} s = {a['ours']['per_second']:.1f}/s")
    print(f"  gurux: {a['gurux']['count']} in {a['gurux']['seconds']:.2f} s = {a['gurux']['per_second']:.1f}/s")
    print(f"  ours / gurux = {a['ratio']:.1f}x")
    print("Load profile readout (attributes 3 and 2), data readout client, HLS 7, suite 1 auth+enc, best of "
          f"{args.runs}:")
    for p in sockets["load_profile"]:
        same, proto = p["same_output"], p["protocol_only"]
        print(f"  {p['backfill_days']} days, as each client comes: ours {p['rows_ours']} rows in "
              f"{p['ours_seconds']:.3f} s, gurux {p['rows_gurux']} rows in {p['gurux_seconds']:.3f} s; "
              f"gurux / ours = {p['ratio']:.1f}x")
        print(f"  {p['backfill_days']} days, same output (ours also makes a datetime of every clock, "
              f"{same['ours_clock_seconds']:.3f} s): ours {same['ours_seconds']:.3f} s; "
              f"gurux / ours = {same['ratio']:.1f}x")
        print(f"  {p['backfill_days']} days, protocol work only (minus AES-GCM: ours {proto['ours_aes_gcm_seconds']:.3f} s,"
              f" gurux {proto['gurux_aes_gcm_seconds']:.3f} s; minus gurux's clock conversion "
              f"{proto['gurux_clock_seconds']:.3f} s): ours {proto['ours_seconds']:.3f} s, gurux "
              f"{proto['gurux_seconds']:.3f} s; gurux / ours = {proto['ratio']:.1f}x")
    print("\nWhat limits the in-process association rate (cProfile; cumulative time of each group, "
          "share of the profiled total):")
    for label, g in ip["profile"]["groups"].items():
        print(f"  {g['share'] * 100:5.1f} %  {g['seconds']:.3f} s  {label}")
    rest = 1 - sum(g["share"] for g in ip["profile"]["groups"].values())
    print(f"  {rest * 100:5.1f} %  the rest: client and server protocol code (APDU codecs, association, "
          "object model), both sides in this one process")
    print(ip["profile"]["pstats"])


if __name__ == "__main__":
    main()
