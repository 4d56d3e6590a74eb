"""`smartmeter hes worker` that dies by SIGKILL at its first key promotion: after a meter
answered key_transfer and took the new keys, before the store makes them ACTIVE. It writes
which meter and generation it left behind to the file given first, then the worker's own
arguments follow.

    python crashing_key_worker.py LEFT.json --concurrency 4 ...
"""
from __future__ import annotations

import json
import os
import signal
import sys

from smartmeter.hes.store import pg

LEFT = sys.argv[1]


async def _die(self, grant, generation, rx_last, job=None):
    with open(LEFT + ".tmp", "w") as out:
        json.dump({"serial": grant.serial, "generation": generation}, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(LEFT + ".tmp", LEFT)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    pg.FleetStore.promote_keys = _die
    from smartmeter.cli.main import main

    arguments = sys.argv[2:]
    sys.argv = ["smartmeter", "hes", "worker", *arguments]
    main()
