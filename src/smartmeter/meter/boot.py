"""Which installed software a meter starts: its factory installation or an activated firmware slot,
and the trial start that decides whether a newly activated slot may run.

`meter run` calls `choose` before anything else. This code always runs from the factory
installation (the command the user started); a slot's copy of it never chooses (the process it
starts carries SMARTMETER_BOOTED), so the part that decides what runs is never replaced by a
download (WELMEC 7.2 D1: a fixed part).

Activation (the legal part's ActivateFirmware) installs the new software into
DATA_DIR/firmware/slots/<name>/smartmeter and records it as the boot record's "trial". The meter
then restarts through the factory command, and `choose`:

1. counts the attempt in the record (durably, first: a power failure during the trial is an
   attempt too; after TRIAL_ATTEMPTS the trial has failed);
2. checks that the slot's files are what the activation expected (legal and application digests,
   computed here by the factory code);
3. runs the slot's self-test in a child process: it must import the whole application, start its
   legal part in a legal process whose software check passes, and start a meter (without
   interfaces) on a scratch copy of this meter's data, so that a start that would fail on these
   stores (a migration, a model error) fails here and not in the field;
4. on success makes the slot active, on probation (the previous one is kept); otherwise removes
   the slot, keeps the running software and records why;
5. a slot on probation must confirm (`confirm`) once it has served for CONFIRM_AFTER seconds;
   every start of it before that counts, and after TRIAL_ATTEMPTS starts without a confirmation
   the previous software is active again and the slot is removed.
The legal part concludes the activation: 51 at the start of any other software than the one
activated, 18 when that software confirms (legal/interface.py).

Then the active slot's meter runs in this very process (exec: same pid, so a kill -9 or a
supervisor sees one meter).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from smartmeter.legal import interface as legal

TRIAL_ATTEMPTS = 2
CONFIRM_AFTER = 5.0  # s of serving before new software is confirmed (the meter's interfaces open, ticking)
SELFTEST_TIMEOUT = 180.0  # seconds: a cold interpreter, the whole application and a legal process
ENV_BOOTED = "SMARTMETER_BOOTED"  # set in the process of a chosen slot: nothing to choose again
ENV_FACTORY_ARGV = "SMARTMETER_FACTORY_ARGV"  # how the factory command was started (a restart runs it again)
ENV_RESTARTED = "SMARTMETER_RESTARTED"  # the meter restarts itself (activation): not a user's start

_RUN = ("import sys\n"
        "sys.path.insert(0, sys.argv.pop(1))\n"
        "from smartmeter.cli.main import main\n"
        "main()\n")
_SELFTEST = ("import sys\n"
             "sys.path.insert(0, sys.argv.pop(1))\n"
             "from smartmeter.meter.boot import selftest_main\n"
             "selftest_main()\n")


def slot_root(data_dir: Path, slot: str) -> Path:
    """The directory to put on sys.path to run a slot (it holds the `smartmeter` package)."""
    return Path(data_dir) / legal.SLOTS_DIR / slot


def choose(data_dir: Path, meter: dict | None = None) -> str | None:
    """The slot to run (None: the factory installation), after a pending trial is decided.
    `meter`: what the self-test's meter is (MeterConfig fields: serial, profile, meter_type)."""
    record = legal.read_boot_record(data_dir)
    trial = record.get("trial")
    if isinstance(trial, dict) and isinstance(trial.get("slot"), str):
        slot = trial["slot"]
        trial["attempts"] = int(trial.get("attempts") or 0) + 1
        legal.write_boot_record(data_dir, record)
        if trial["attempts"] > TRIAL_ATTEMPTS:
            ok, reason = False, f"the new software did not come up in {TRIAL_ATTEMPTS} attempts"
        else:
            ok, reason = _try(data_dir, trial, meter or {})
        last = {"slot": slot, "outcome": "activated" if ok else "failed", "reason": reason,
                "identifier": trial.get("identifier", "")}
        if ok:
            record.update(active=slot, previous=record.get("active"), trial=None, last=last,
                          probation={"slot": slot, "starts": 0})
        else:
            record.update(trial=None, last=last)
        legal.write_boot_record(data_dir, record)
        if not ok:
            shutil.rmtree(slot_root(data_dir, slot), ignore_errors=True)
        _remove_unused_slots(data_dir, {record.get("active"), record.get("previous")})
    probation = record.get("probation")
    if isinstance(probation, dict) and probation.get("slot") == record.get("active"):
        probation["starts"] = int(probation.get("starts") or 0) + 1
        if probation["starts"] > TRIAL_ATTEMPTS:  # it never kept running: back to the software before it
            slot = probation["slot"]
            record.update(active=record.get("previous"), previous=None, probation=None,
                          last={"slot": slot, "outcome": "failed", "identifier": (record.get("last") or {}).get(
                              "identifier", ""), "reason": f"the new software stopped before it had served "
                                                           f"{CONFIRM_AFTER:.0f} s, {TRIAL_ATTEMPTS} times"})
            legal.write_boot_record(data_dir, record)
            shutil.rmtree(slot_root(data_dir, slot), ignore_errors=True)
        else:
            legal.write_boot_record(data_dir, record)
    return active_slot(data_dir)  # a slot removed by hand: the factory installation is what is left


def _remove_unused_slots(data_dir: Path, keep: set) -> None:
    """Only the running software and the one before it stay installed (each is a whole package)."""
    slots = Path(data_dir) / legal.SLOTS_DIR
    for entry in slots.iterdir() if slots.is_dir() else ():
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)


def confirm(data_dir: Path) -> bool:
    """The running software has served long enough: it stays (ends its probation). -> whether it was
    on probation."""
    record = legal.read_boot_record(data_dir)
    if not isinstance(record.get("probation"), dict):
        return False
    record["probation"] = None
    legal.write_boot_record(data_dir, record)
    return True


def on_probation(data_dir: Path) -> bool:
    """Is the active software new and not confirmed yet?"""
    probation = legal.read_boot_record(data_dir).get("probation")
    return isinstance(probation, dict)


def active_slot(data_dir: Path) -> str | None:
    """The slot the meter in `data_dir` runs now (None: its factory installation); decides nothing."""
    active = legal.read_boot_record(data_dir).get("active")
    if isinstance(active, str) and (slot_root(data_dir, active) / "smartmeter").is_dir():
        return active
    return None


def _try(data_dir: Path, trial: dict, meter: dict) -> tuple[bool, str]:
    root = slot_root(data_dir, trial["slot"])
    if not (root / "smartmeter").is_dir():
        return False, "the installed software is missing"
    try:
        legal_digest, application_digest = legal.package_digests(root / "smartmeter")
    except Exception as exc:  # noqa: BLE001 - an unreadable slot is a failed trial, said in one line
        return False, f"the installed software cannot be read: {exc}"
    if (legal_digest, application_digest) != (trial.get("legal_digest"), trial.get("application_digest")):
        return False, "the installed software is not what was activated"
    # the scratch copy lives in the data directory (owner-only, like the data) and this process,
    # not the child that may be killed, removes it
    scratch = Path(data_dir) / "firmware" / "selftest"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        shutil.copytree(data_dir, scratch, ignore=shutil.ignore_patterns("*.sock", "firmware"), symlinks=True)
        done = subprocess.run([sys.executable, "-c", _SELFTEST, str(root), str(scratch), json.dumps(meter)],
                              capture_output=True, timeout=SELFTEST_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"the new software's self-test did not finish in {SELFTEST_TIMEOUT:.0f} s"
    except OSError as exc:
        return False, f"the self-test's copy of the data could not be made: {exc}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    try:
        report = json.loads(done.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = None
    if done.returncode != 0 or not isinstance(report, dict) or report.get("ok") is not True:
        why = report.get("reason") if isinstance(report, dict) else None
        if not why:
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            why = lines[-1] if lines else f"exit status {done.returncode}"
        return False, f"the new software failed its self-test: {str(why)[:160]}"
    return True, ""


def selftest_main() -> None:
    """Run in a child process from the slot under test (argv: a scratch copy of the meter's data, the
    meter as JSON): what must work before a meter may run on it. Prints one JSON line {"ok", "reason"}."""
    try:
        import smartmeter.cli.main  # noqa: F401 - the whole command line and, through it, the application
        from smartmeter import __version__
        from smartmeter.meter.runtime import Meter, MeterConfig

        identity = legal.identify_software(__version__, fallback=False)
        if not identity.ok:
            raise RuntimeError(f"its legally relevant part fails its software check: {identity.reason}")
        copy, meter = Path(sys.argv[1]), json.loads(sys.argv[2])
        Meter(MeterConfig(data_dir=copy, backfill_days=0, **meter)).close()
    except BaseException as exc:  # noqa: BLE001 - the reason is the report
        print(json.dumps({"ok": False, "reason": f"{type(exc).__name__}: {exc}"}), flush=True)
        sys.exit(1)
    print(json.dumps({"ok": True, "reason": ""}), flush=True)


def run_slot(data_dir: Path, slot: str) -> None:
    """Replace this process by the meter of `slot`, with the same command line. Does not return."""
    env = dict(os.environ, **{ENV_BOOTED: slot, ENV_FACTORY_ARGV: os.environ.get(ENV_FACTORY_ARGV)
                              or json.dumps(sys.orig_argv)})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-c", _RUN, str(slot_root(data_dir, slot)), *sys.argv[1:]], env)


def restart() -> None:
    """Start the meter again through its factory command (which chooses the software anew), in
    this process. Does not return."""
    argv = json.loads(os.environ.get(ENV_FACTORY_ARGV) or "null") or sys.orig_argv
    env = {k: v for k, v in os.environ.items() if k not in (ENV_BOOTED, ENV_FACTORY_ARGV)}
    env[ENV_RESTARTED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)
