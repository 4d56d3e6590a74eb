"""`smartmeter hes` commands of the head-end at scale (PostgreSQL store, NATS JetStream):

    smartmeter hes db migrate --db DSN
    smartmeter hes db import-fleet MANIFEST --db DSN [--kek FILE]
    smartmeter hes db cell NAME --max-sessions N --connects-per-s R --db DSN
    smartmeter hes worker --nats URL --db DSN [--concurrency N]
    smartmeter hes campaign start|status|retry-failed|resume --nats URL --db DSN ...
    smartmeter hes read SERIAL --nats URL --db DSN        (on demand, ahead of campaigns)
    smartmeter hes keys change (--serial S ... | --all | --cell C) --nats URL --db DSN [--wait]
"""
from __future__ import annotations

import asyncio
import functools
import json
import signal
import sys
import time
from pathlib import Path

import click

from smartmeter.cli import UsageProblem
from smartmeter.cli.hes import hes_group

__all__ = ["DSN_OPTION", "KEK_OPTION", "NATS_OPTION", "open_store"]

DEFAULT_KEK = Path("hes-kek.hex")

DSN_OPTION = click.option("--db", "dsn", envvar="SMARTMETER_HES_DB", required=True, metavar="DSN",
                          help="The fleet store: postgresql://USER@HOST:PORT/DATABASE (or $SMARTMETER_HES_DB).")
NATS_OPTION = click.option("--nats", "nats_url", envvar="SMARTMETER_NATS", required=True, metavar="URL",
                           help="NATS with JetStream: nats://HOST:PORT, several separated by commas "
                                "(or $SMARTMETER_NATS).")
KEK_OPTION = click.option("--kek", "kek_file", envvar="SMARTMETER_HES_KEK", default=DEFAULT_KEK, show_default=True,
                          type=click.Path(dir_okay=False, path_type=Path),
                          help="The key-encryption key that wraps the meters' keys in the store (64 hex digits; "
                               "`hes db import-fleet` creates it if missing). Keep it apart from the database.")
WAIT_OPTION = click.option("--wait-for-services", "patience", type=click.FloatRange(0), default=60.0,
                           show_default=True, metavar="S",
                           help="How long to keep retrying when the database or NATS is not reachable yet.")


def _say(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


async def _retrying(opener, patience: float):
    """`opener()` until it succeeds: one line when it first fails, then back-off, for at most
    `patience` seconds (a database or broker that is still starting)."""
    from smartmeter.hes.fleet.broker import BrokerUnavailable, backoff_delay
    from smartmeter.hes.store.pg import StoreUnavailable

    deadline = time.monotonic() + patience
    attempt = 0
    while True:
        try:
            return await opener()
        except (StoreUnavailable, BrokerUnavailable) as exc:
            attempt += 1
            if time.monotonic() >= deadline:
                raise
            if attempt == 1:
                _say(f"{exc}; retrying for up to {patience:g} s")
            await asyncio.sleep(min(backoff_delay(attempt, 0.5, 5.0), max(0.1, deadline - time.monotonic())))


async def open_store(dsn: str, kek_file: Path | None = None, *, create_kek: bool = False, max_size: int = 10,
                     patience: float = 0.0, check: bool = True):
    from smartmeter.hes.store.pg import FleetStore, KeyVault

    vault = KeyVault.from_file(kek_file, create=create_kek) if kek_file is not None else None
    return await _retrying(lambda: FleetStore.open(dsn, vault, max_size=max_size, check=check), patience)


async def open_broker(nats_url: str, patience: float = 0.0):
    from smartmeter.hes.fleet.broker import Broker

    broker = await _retrying(lambda: Broker.connect(nats_url, on_problem=_say), patience)
    await broker.ensure_streams()
    return broker


# --------------------------------------------------------------------------------- db


@hes_group.group("db")
def db_group() -> None:
    """The fleet store (PostgreSQL): schema, meters, network cells."""


@db_group.command("migrate")
@DSN_OPTION
@WAIT_OPTION
def db_migrate(dsn: str, patience: float) -> None:
    """Create or upgrade the store's schema (versioned SQL migrations, each applied once)."""
    async def run() -> list[str]:
        store = await open_store(dsn, patience=patience, check=False, max_size=2)
        try:
            return await store.migrate()
        finally:
            await store.close()

    applied = asyncio.run(run())
    click.echo(f"applied {', '.join(applied)}" if applied else "the schema is up to date")


def read_manifest(path: Path):
    """The meters of a fleet manifest (`smartmeter sim fleet --manifest`) as MeterRecords."""
    from smartmeter.hes.store.pg import MeterRecord

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        meters = raw["meters"]
        records = []
        for m in meters:
            keys = {kind: bytes.fromhex(m[kind]) for kind in ("ek", "ak", "master", "hls_secret") if m.get(kind)}
            records.append(MeterRecord(
                serial=str(m["serial"]), system_title=bytes.fromhex(m["system_title"]), host=str(m["host"]),
                port=int(m["port"]), cell=str(m.get("cell", "default")), client_sap=int(m.get("client_sap", 1)),
                server_sap=int(m.get("server_sap", 1)), mechanism=int(m.get("mechanism", 5)),
                suite=int(m.get("suite", 0)), policy=int(m.get("policy", 0)), keys=keys))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"{path}: cannot read it ({exc})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageProblem(f"{path}: not a fleet manifest ({exc.__class__.__name__}: {exc})",
                           "give the --manifest file of `smartmeter sim fleet`") from None
    return records


@db_group.command("import-fleet")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@DSN_OPTION
@KEK_OPTION
@click.option("--max-sessions", type=click.IntRange(1), default=16, show_default=True,
              help="Sessions at once per network cell, for cells new to the store.")
@click.option("--connects-per-s", type=click.FloatRange(0.01), default=50.0, show_default=True,
              help="New connections a second per network cell, for cells new to the store.")
@WAIT_OPTION
def db_import_fleet(manifest: Path, dsn: str, kek_file: Path, max_sessions: int, connects_per_s: float,
                    patience: float) -> None:
    """Add (or update) the meters of a fleet manifest, with their keys wrapped under --kek.
    The schema is created or upgraded first."""
    records = read_manifest(manifest)

    async def run() -> int:
        store = await open_store(dsn, kek_file, create_kek=True, patience=patience, check=False)
        try:
            await store.migrate()
            return await store.add_meters(records, (max_sessions, connects_per_s, max(1.0, connects_per_s)))
        finally:
            await store.close()

    count = asyncio.run(run())
    cells = sorted({r.cell for r in records})
    click.echo(f"{count} meters in {len(cells)} cell(s) imported into the store; keys wrapped under {kek_file}")


@db_group.command("cell")
@click.argument("name")
@click.option("--max-sessions", type=click.IntRange(1), required=True, help="Sessions at once in this cell.")
@click.option("--connects-per-s", type=click.FloatRange(0.01), required=True, help="New connections a second.")
@click.option("--burst", type=click.FloatRange(1), default=None, help="Connections allowed at once after a pause "
                                                                      "(default: one second's worth).")
@DSN_OPTION
def db_cell(name: str, max_sessions: int, connects_per_s: float, burst: float | None, dsn: str) -> None:
    """Set a network cell's limits, enforced across all workers."""
    async def run() -> None:
        store = await open_store(dsn)
        try:
            await store.set_cell_limits(name, max_sessions, connects_per_s, burst)
        finally:
            await store.close()

    asyncio.run(run())
    click.echo(f"cell {name}: at most {max_sessions} sessions, {connects_per_s:g} new connections/s")


# ----------------------------------------------------------------------------- worker


@hes_group.command("worker")
@NATS_OPTION
@DSN_OPTION
@KEK_OPTION
@click.option("--concurrency", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Sessions this worker runs at once.")
@click.option("--connect-timeout", type=click.FloatRange(0.1), default=5.0, show_default=True, metavar="S")
@click.option("--association-timeout", type=click.FloatRange(0.1), default=10.0, show_default=True, metavar="S")
@click.option("--request-timeout", type=click.FloatRange(0.1), default=10.0, show_default=True, metavar="S")
@click.option("--session-timeout", type=click.FloatRange(0.1), default=60.0, show_default=True, metavar="S",
              help="The whole session, association to release.")
@click.option("--ack-wait", type=click.FloatRange(1), default=30.0, show_default=True, metavar="S",
              help="After this long without a heartbeat from a worker, JetStream hands its job to another.")
@click.option("--max-attempts", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Sessions tried for a job before its outcome is 'failed'.")
@click.option("--name", default=None, help="This worker's name in leases and outcomes (default host:pid:random).")
@click.option("--pushes/--no-pushes", default=True, show_default=True,
              help="Also store the pushes the listeners publish (`hes listen --nats`).")
@click.option("--objects", "objects_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Push object lists by setup OBIS (TOML or JSON, as `hes listen --objects`), tried "
                                 "before the model's when decoding the pushes.")
@WAIT_OPTION
def worker(nats_url: str, dsn: str, kek_file: Path, concurrency: int, connect_timeout: float,
           association_timeout: float, request_timeout: float, session_timeout: float, ack_wait: float,
           max_attempts: int, name: str | None, pushes: bool, objects_file: Path | None, patience: float) -> None:
    """Take read jobs from JetStream and store what the meters answer. Run as many as you like;
    Ctrl-C or SIGTERM finishes the sessions under way and stops."""
    from smartmeter.hes.fleet.session import Timeouts
    from smartmeter.hes.fleet.worker import Worker, WorkerSettings

    settings = WorkerSettings(concurrency=concurrency, ack_wait=ack_wait, max_attempts=max_attempts,
                              timeouts=Timeouts(connect_timeout, association_timeout, request_timeout, session_timeout))
    object_lists = None
    if objects_file is not None:
        from smartmeter.hes.push_listener import ObjectLists, load_object_list_file, model_object_lists
        object_lists = ObjectLists(None, load_object_list_file(objects_file), model_object_lists())
    asyncio.run(_work(nats_url, dsn, kek_file, settings, name, patience, Worker, pushes, object_lists))


async def _work(nats_url, dsn, kek_file, settings, name, patience, worker_class, pushes: bool,
                object_lists=None) -> None:
    from smartmeter.hes.fleet.pushes import PushIngester

    store = await open_store(dsn, kek_file, max_size=settings.concurrency + 6, patience=patience)
    try:
        await store.check_kek()
        broker = await open_broker(nats_url, patience)
    except BaseException:
        await store.close()
        raise
    w = worker_class(store, broker, settings, name=name, say=_say)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, w.stop)
    ingester = PushIngester(store, broker, say=_say, object_lists=object_lists) if pushes else None
    ingesting = asyncio.create_task(ingester.run(w.stopping)) if ingester else None
    if ingesting is not None:
        def ended(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                _say(f"the push ingester stopped: {type(task.exception()).__name__}: {task.exception()}; "
                     "pushes wait in NATS for another worker")
        ingesting.add_done_callback(ended)
    _say(f"worker {w.name}: {settings.concurrency} sessions at once; jobs{' and pushes' if pushes else ''} from "
         f"{nats_url}; store {_dsn(dsn)}")
    try:
        await w.run()
    finally:
        if ingesting is not None:
            ingesting.cancel()
            await asyncio.gather(ingesting, return_exceptions=True)
        pushed = f"; pushes {dict(ingester.counts)}" if ingester and ingester.counts else ""
        _say(f"worker {w.name} stopped: {w.stats.line()}{pushed}")
        await broker.close()
        await store.close()


def _dsn(dsn: str) -> str:
    from smartmeter.hes.store.pg import describe_dsn

    return describe_dsn(dsn)


# --------------------------------------------------------------------------- campaign


@hes_group.group("campaign")
def campaign_group() -> None:
    """Read campaigns over the fleet: one job per meter, one outcome per job."""


@campaign_group.command("start")
@NATS_OPTION
@DSN_OPTION
@click.option("--name", default=None, help="A name for the campaign (default: read <time>).")
@click.option("--cell", default=None, help="Only the meters of this network cell.")
@click.option("--meter", "serials", multiple=True, metavar="SERIAL", help="Only these meters (repeat).")
@click.option("--wait", is_flag=True, help="Wait until every job has its outcome, then print the status.")
@click.option("--publish-patience", type=click.FloatRange(0), default=300.0, show_default=True, metavar="S",
              help="How long to keep retrying when NATS refuses jobs (its store full, a broker away).")
@WAIT_OPTION
def campaign_start(nats_url: str, dsn: str, name: str | None, cell: str | None, serials: tuple[str, ...],
                   wait: bool, publish_patience: float, patience: float) -> None:
    """Start a read campaign: the meters' registers and the new rows of their load profiles."""
    name = name or time.strftime("read %Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _start_campaign(nats_url, dsn, patience, name=name, cell=cell, serials=serials, wait=wait, kind="read",
                    publish_patience=publish_patience, jobs_are="jobs")


def _start_campaign(nats_url: str, dsn: str, patience: float, *, name: str, cell: str | None,
                    serials: tuple[str, ...], wait: bool, kind: str, jobs_are: str,
                    publish_patience: float = 300.0) -> dict | None:
    """Publish a campaign of `kind`; with `wait`, print its status once every job has its outcome."""
    from smartmeter.hes.fleet.campaign import start_campaign

    async def run() -> dict | None:
        store, broker = await _both(nats_url, dsn, patience)
        try:
            campaign, jobs = await start_campaign(store, broker, name=name, cell=cell, serials=serials, say=_say,
                                                  patience=publish_patience, kind=kind)
            _say(f"campaign {campaign} ({name}): {jobs} {jobs_are} queued")
            return await _wait(store, campaign) if wait else None
        finally:
            await broker.close()
            await store.close()

    status = asyncio.run(run())
    if status is not None:
        _print_status(status, False)
    return status


async def _both(nats_url: str, dsn: str, patience: float):
    store = await open_store(dsn, patience=patience)
    try:
        return store, await open_broker(nats_url, patience)
    except BaseException:
        await store.close()
        raise


async def _wait(store, campaign: int, timeout: float | None = None, poll: float = 0.5) -> dict:
    started = time.monotonic()
    shown = None
    while True:
        status = await store.campaign_status(campaign)
        progress = (status["done"], status["failed"])
        if progress != shown and sys.stdout.isatty():
            _say(f"  {status['done']} done, {status['failed']} failed, {status['queued']} to go")
        shown = progress
        if status["queued"] == 0 or (timeout is not None and time.monotonic() - started > timeout):
            return status
        await asyncio.sleep(poll)


def _print_status(status: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(status))
        return
    click.echo(f"campaign {status['campaign']} ({status['name']}): {status['done']} done, {status['failed']} failed, "
               f"{status['queued']} queued; {status['rows']} rows stored")
    for f in status["failures"]:
        click.echo(f"  failed {f['serial']} after {f['attempts']} attempt(s): {f['error']}")


@campaign_group.command("status")
@click.argument("campaign", type=int)
@DSN_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def campaign_status(campaign: int, dsn: str, as_json: bool) -> None:
    """How far a campaign is: jobs done, failed (with why) and still queued."""
    async def run() -> dict:
        store = await open_store(dsn)
        try:
            return await store.campaign_status(campaign)
        finally:
            await store.close()

    _print_status(asyncio.run(run()), as_json)


@campaign_group.command("retry-failed")
@click.argument("campaign", type=int)
@NATS_OPTION
@DSN_OPTION
@WAIT_OPTION
def campaign_retry_failed(campaign: int, nats_url: str, dsn: str, patience: float) -> None:
    """Queue the failed jobs of a campaign again (their attempts start from zero)."""
    from smartmeter.hes.fleet.campaign import retry_failed

    async def run() -> int:
        store, broker = await _both(nats_url, dsn, patience)
        try:
            return await retry_failed(store, broker, campaign, say=_say)
        finally:
            await broker.close()
            await store.close()

    click.echo(f"campaign {campaign}: {asyncio.run(run())} failed jobs queued again")


@campaign_group.command("resume")
@click.argument("campaign", type=int)
@NATS_OPTION
@DSN_OPTION
@WAIT_OPTION
def campaign_resume(campaign: int, nats_url: str, dsn: str, patience: float) -> None:
    """Publish the jobs still without an outcome again, after a `campaign start` that was cut
    short (the broker drops those it already has)."""
    from smartmeter.hes.fleet.campaign import resume_campaign

    async def run() -> int:
        store, broker = await _both(nats_url, dsn, patience)
        try:
            return await resume_campaign(store, broker, campaign, say=_say)
        finally:
            await broker.close()
            await store.close()

    click.echo(f"campaign {campaign}: {asyncio.run(run())} jobs published again")


# ------------------------------------------------------------------------------- keys


@hes_group.group("keys")
def keys_group() -> None:
    """The meters' keys: change them (a campaign of kind key_change, run by the workers)."""


@keys_group.command("change")
@NATS_OPTION
@DSN_OPTION
@click.option("--serial", "serials", multiple=True, metavar="SERIAL", help="This meter (repeat for more).")
@click.option("--all", "every", is_flag=True, help="Every meter in the store.")
@click.option("--cell", default=None, help="The meters of this network cell.")
@click.option("--name", default=None, help="A name for the campaign (default: key change <time>).")
@click.option("--wait", is_flag=True, help="Wait until every meter has its outcome, then print the status.")
@WAIT_OPTION
def keys_change(nats_url: str, dsn: str, serials: tuple[str, ...], every: bool, cell: str | None,
                name: str | None, wait: bool, patience: float) -> None:
    """Give the meters new global unicast keys (EK and AK). Per meter, a worker writes fresh
    keys to the store (state NEW, wrapped) before it transfers them to the meter under the
    current keys (key_transfer, wrapped with the meter's master key), then makes them ACTIVE
    and the old ones EXPIRED in one transaction. A change cut short by a crash is settled by
    the meter's next session: it finds out which keys the meter holds."""
    if sum((bool(serials), every, cell is not None)) != 1:
        raise UsageProblem("say which meters: --serial S (repeatable), --all or --cell C (one of them)")
    name = name or time.strftime("key change %Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = _start_campaign(nats_url, dsn, patience, name=name, cell=cell, serials=serials, wait=wait,
                             kind="key_change", jobs_are="key changes")
    if status is not None and status["failed"]:
        raise SystemExit(1)


@hes_group.command("read")
@click.argument("serial")
@NATS_OPTION
@DSN_OPTION
@click.option("--timeout", type=click.FloatRange(1), default=60.0, show_default=True, metavar="S",
              help="How long to wait for the outcome.")
@WAIT_OPTION
def read_now(serial: str, nats_url: str, dsn: str, timeout: float, patience: float) -> None:
    """Read one meter now, ahead of any campaign (the workers' high-priority lane), and wait for it."""
    from smartmeter.hes.fleet.campaign import start_campaign

    async def run() -> dict:
        store, broker = await _both(nats_url, dsn, patience)
        try:
            campaign, _ = await start_campaign(store, broker, name=f"on demand {serial}", serials=[serial],
                                               lane="urgent", say=_say)
            return await _wait(store, campaign, timeout, poll=0.05)
        finally:
            await broker.close()
            await store.close()

    started = time.monotonic()
    status = asyncio.run(run())
    took = time.monotonic() - started
    if status["done"]:
        click.echo(f"{serial}: read in {took:.2f} s, {status['rows']} new rows stored")
    elif status["failed"]:
        raise UsageProblem(f"{serial}: the read failed: {status['failures'][0]['error']}")
    else:
        raise UsageProblem(f"{serial}: no outcome within {timeout:g} s", "is a `smartmeter hes worker` running?")


# ------------------------------------------------------------------ listen --nats


def listen_to_nats(keys, nats_url: str, store_dsn: str | None, kek_file: Path, host: str, udp_port: int | None,
                   tcp_port: int | None) -> None:
    """`hes listen --nats`: authentic pushes to JetStream (see smartmeter.hes.fleet.pushes)."""
    asyncio.run(_listen_to_nats(keys, nats_url, store_dsn, kek_file, host, udp_port, tcp_port))


async def _listen_to_nats(keys, nats_url, store_dsn, kek_file, host, udp_port, tcp_port) -> None:
    import os
    import socket

    from smartmeter.hes.fleet.pushes import NatsPushGate, keyring_from_store, read_push_keys
    from smartmeter.cli.hes import serve_pushes, until_stopped
    from smartmeter.hes.push_listener import Keyring

    keyring = Keyring.load(keys) if keys else Keyring()
    store = key_source = None
    if store_dsn is not None:
        # kept open: a meter imported, or whose keys changed, after the start is looked up there
        store = await open_store(store_dsn, kek_file, max_size=2, patience=60.0)
        try:
            await store.check_kek()
            stored = await keyring_from_store(store)
        except BaseException:
            await store.close()
            raise
        keyring = Keyring([*stored.meters.values(), *keyring.meters.values()])
        key_source = functools.partial(read_push_keys, store)
    if not len(keyring) and store is None:
        raise UsageProblem("no meter keys: neither --keys nor the --store gave any",
                           "import meters with `smartmeter hes db import-fleet`, or give --keys")
    broker = await open_broker(nats_url, 60.0)
    gate = NatsPushGate(keyring, name=f"{socket.gethostname()}:{os.getpid()}", key_source=key_source)
    publishing = asyncio.create_task(gate.publish_forever(broker))
    closers, lines = await serve_pushes(gate, host, udp_port, tcp_port)
    _say(f"listening for pushes on {', '.join(lines)}; keys of {len(keyring)} meter(s); publishing to {nats_url}")
    await until_stopped()
    for close in closers:
        close()
    await gate.close()  # pushes held for a key look-up are checked first
    try:
        await asyncio.wait_for(gate.queue.join(), 10.0)  # what was taken goes out before the listener does
    except asyncio.TimeoutError:
        _say(f"{gate.queue.qsize()} pushes not published: NATS did not take them within 10 s")
    publishing.cancel()
    await broker.close()
    if store is not None:
        await store.close()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(gate.counts.items())) or "nothing received"
    _say(f"stopped: {counts}")

