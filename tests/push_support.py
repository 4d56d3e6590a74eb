"""Shared by the push tests: a sender that records what the meter submits (no sockets), and
the Data Readout client's side of a push: reassemble GBT blocks, decrypt with its keys, parse."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.apdu.gbt import GENERAL_BLOCK_TRANSFER_TAG, GeneralBlockTransfer
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.hes.credentials import load_credentials

SETUPS = {  # push script table selector -> push setup (companion §10)
    1: "0-1:25.9.0.255", 2: "0-2:25.9.0.255", 3: "0-3:25.9.0.255", 4: "0-4:25.9.0.255",
    5: "0-0:25.9.0.255", 6: "0-7:25.9.0.255", 7: "0-5:25.9.0.255", 8: "0-6:25.9.0.255",
}


@dataclass
class Submitted:
    frames: list[bytes]
    transport_service: int
    destination: str
    retries: int
    randomisation: int
    repetition_delay: int
    window: tuple
    meter_time: float  # the meter clock when the push was handed over


class RecordingSender:
    """PushSender's submit, recorded; every push is taken unless the test sets `accepting` False
    (as a full queue refuses): then it is recorded and refused."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.submitted: list[Submitted] = []
        self.accepting = True

    def submit(self, frames, transport_service, destination, retries, randomisation, repetition_delay,
               window=()) -> bool:
        self.submitted.append(Submitted(list(frames), transport_service, destination, retries, randomisation,
                                        repetition_delay, tuple(window), self.clock.now()))
        return self.accepting


def reassembled(frames: list[bytes]) -> bytes:
    """The APDU a push carries: as it is, or the block-data of its GBT blocks in order."""
    if frames[0][0] != GENERAL_BLOCK_TRANSFER_TAG:
        assert len(frames) == 1
        return frames[0]
    blocks = [GeneralBlockTransfer.from_bytes(f) for f in frames]
    assert [b.block_number for b in blocks] == list(range(1, len(blocks) + 1))
    assert [b.last_block for b in blocks] == [False] * (len(blocks) - 1) + [True]
    return b"".join(b.block_data for b in blocks)


def data_readout_keys(meter) -> tuple[bytes, bytes]:
    creds = load_credentials(Path(meter.config.data_dir) / "credentials" / "data_readout.json")
    return creds.security.ek, creds.security.ak


def open_push(meter, frames: list[bytes]) -> tuple[GeneralGloCiphering, DataNotification]:
    """Decrypt and parse a push with the Data Readout client's keys (our own client code)."""
    protected = GeneralGloCiphering.from_bytes(reassembled(frames))
    ek, ak = data_readout_keys(meter)
    return protected, DataNotification.from_bytes(protected.unprotect(ek, ak))
