"""IC 18 Image transfer (Blue Book 4.4.6, companion §7, IDIS P2 §6.9): the class over the engine.
Every attribute's type, every wrong type of every method and write answered type-unmatched (and
nothing changes), disabled transfers read-write-denied before the data is looked at, the
engine's refusals as other-reason / temporary-failure; then a whole upgrade through the DLMS
server with the model's own entries (ksmw.toml): the management client's initiate, verify and
activate, blocks from the pre-established FW update client, the activation by the script table
and by the activation scheduler at the time the head-end wrote."""
from __future__ import annotations

import datetime as dt
import math
import random
import tomllib
from importlib import resources
from zoneinfo import ZoneInfo

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu import action, get, set as set_
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, CosemMethodDescriptor, DataAccessResult
from smartmeter.dlms.apdu.errors import ExceptionResponse
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import ClientAssociation, GetExchange
from smartmeter.dlms.server import DlmsServer
from smartmeter.meter.image_transfer import ImageTransfer, TransferStatus, Verification
from smartmeter.meter.schedule import Passage
from smartmeter.meter.scheduler import SchedulerEngine
from smartmeter.meter.store import MeterStore

TRANSFER = Obis.parse("0-0:44.0.0.255").to_bytes()
SCRIPTS = Obis.parse("0-0:10.0.107.255").to_bytes()
SCHEDULER = Obis.parse("0-0:15.0.2.255").to_bytes()
MAX_SIZE = 1 << 20
IDENTIFIER = b"SMFW-2.0.0"
SIGNATURE = bytes(range(64, 136))
CLIENT = RequestContext("management", 1)
SUCCESS, OTHER_REASON = DataAccessResult.SUCCESS, DataAccessResult.OTHER_REASON
TYPE_UNMATCHED, READ_WRITE_DENIED = DataAccessResult.TYPE_UNMATCHED, DataAccessResult.READ_WRITE_DENIED
TEMPORARY_FAILURE, OBJECT_UNAVAILABLE = DataAccessResult.TEMPORARY_FAILURE, DataAccessResult.OBJECT_UNAVAILABLE
BERLIN = ZoneInfo("Europe/Berlin")


def image_of(size: int, seed: int = 3) -> bytes:
    return random.Random(seed).randbytes(size)


def ksmw_entries() -> list[dict]:
    """The three firmware objects as ksmw.toml declares them, for the test's clients (no security
    here): management (SAP 1) and maintenance (SAP 6) as themselves, fw_update as `fw` (SAP 3,
    pre-established)."""
    doc = tomllib.loads(resources.files("smartmeter.cosem.model").joinpath("ksmw.toml").read_text())
    wanted = ("0-0:44.0.0.255", "0-0:10.0.107.255", "0-0:15.0.2.255")
    entries = [dict(o) for o in doc["object"] if o["obis"] in wanted]
    assert sorted(o["obis"] for o in entries) == sorted(wanted)
    for o in entries:
        access = o.pop("access")
        o["access"] = {",".join({"fw_update": "fw"}.get(c.strip(), c.strip()) for c in clients.split(",")): rights
                       for clients, rights in access.items()}
    return entries


MODEL = ObjectModel.from_toml({
    "profile": {"name": "test"},
    "clients": {"management": {"sap": 1, "interfaces": ["lan"], "mechanism": 0},
                "maintenance": {"sap": 6, "interfaces": ["lan"], "mechanism": 0},
                "fw": {"sap": 3, "interfaces": ["lan"], "mechanism": 0, "pre_established": True}},
    "object": ksmw_entries(),
})


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


class Runtime:
    """What the meter's runtime binds: the engine with its verify/activate/event callbacks."""

    def __init__(self, store, holding, expected: bytes | None) -> None:
        self.expected = expected
        self.activations: list[RequestContext] = []
        self.events: list[tuple[int, object]] = []
        self.engine = ImageTransfer(store, holding, self.verify, self.activations.append,
                                    lambda code, ctx: self.events.append((code, ctx)), MAX_SIZE)

    def verify(self, identifier: bytes, size: int, ctx) -> Verification:
        if self.engine.read_image() != self.expected:
            return Verification(False, "the image is not the one signed")
        return Verification(True, "valid", identifier, size, SIGNATURE)


@pytest.fixture
def store(tmp_path):
    s = MeterStore(tmp_path / "meter")
    yield s
    s.close()


@pytest.fixture
def runtime(store, tmp_path) -> Runtime:
    return Runtime(store, tmp_path / "meter" / "firmware", image_of(3000))


def directory(store, runtime: Runtime | None, clock: Clock | None = None):
    bindings = {"settings": store, "clock": clock or Clock(0.0)}
    if runtime is not None:
        bindings["firmware.image_transfer"] = runtime.engine
    return MODEL.instantiate(bindings)


def transfer_object(store, runtime):
    return directory(store, runtime).by_ln[TRANSFER][1]


def attributes(obj) -> list[Data]:
    return [obj.get(i, CLIENT) for i in range(2, 8)]


def refused(call) -> DataAccessResult:
    with pytest.raises(CosemAccessError) as exc:
        call()
    return exc.value.result


def initiate_data(identifier: bytes, size: int) -> Data:
    return Data.structure([Data.octet_string(identifier), Data.double_long_unsigned(size)])


def block_data(number: int, value: bytes) -> Data:
    return Data.structure([Data.double_long_unsigned(number), Data.octet_string(value)])


# -- the class over the engine -------------------------------------------------------------------------


def test_the_attributes_before_anything_is_initiated(store, runtime):
    obj = transfer_object(store, runtime)
    assert attributes(obj) == [Data.double_long_unsigned(1024), Data(DataType.BIT_STRING, ""),
                               Data.double_long_unsigned(0), Data.boolean(True), Data.enum(0), Data.array([])]
    assert obj.get(1, CLIENT) == Data.octet_string(TRANSFER)
    for value in attributes(obj):  # every one encodes
        axdr.encode(value)


def test_the_attributes_through_a_transfer(store, runtime):
    obj = transfer_object(store, runtime)
    image = runtime.expected
    obj.set(2, Data.double_long_unsigned(512), CLIENT)
    blocks = math.ceil(len(image) / 512)  # 6: five of 512, one of 440
    obj.invoke(1, initiate_data(IDENTIFIER, len(image)), CLIENT)
    assert attributes(obj)[:5] == [Data.double_long_unsigned(512), Data(DataType.BIT_STRING, "0" * blocks),
                                   Data.double_long_unsigned(0), Data.boolean(True), Data.enum(1)]
    for number in (0, 1, 3):
        obj.invoke(2, block_data(number, image[number * 512:(number + 1) * 512]), CLIENT)
    assert obj.get(3, CLIENT) == Data(DataType.BIT_STRING, "110100")
    assert obj.get(4, CLIENT) == Data.double_long_unsigned(2)
    assert refused(lambda: obj.invoke(3, Data.integer(0), CLIENT)) == OTHER_REASON  # 2, 4, 5 missing
    for number in (2, 4, 5):
        obj.invoke(2, block_data(number, image[number * 512:(number + 1) * 512]), CLIENT)
    assert obj.get(4, CLIENT) == Data.double_long_unsigned(blocks)
    assert obj.invoke(3, Data.integer(0), CLIENT) is None
    assert obj.get(6, CLIENT) == Data.enum(3) and runtime.events == [(17, CLIENT)]
    assert obj.get(7, CLIENT) == Data.array([Data.structure([
        Data.double_long_unsigned(len(image)), Data.octet_string(IDENTIFIER), Data.octet_string(SIGNATURE)])])
    assert obj.invoke(4, Data.integer(0), CLIENT) is None
    assert obj.get(6, CLIENT) == Data.enum(5) and runtime.activations == [CLIENT]
    assert obj.get(7, CLIENT).value  # still shown while the activation is under way
    assert refused(lambda: obj.invoke(4, Data.integer(0), CLIENT)) == TEMPORARY_FAILURE
    runtime.engine.activation_finished(True)
    assert obj.get(6, CLIENT) == Data.enum(6) and len(obj.get(7, CLIENT).value) == 1
    for value in attributes(obj):
        axdr.encode(value)


def test_a_failed_verification_answers_other_reason_with_status_4(store, tmp_path):
    runtime = Runtime(store, tmp_path / "meter" / "firmware", expected=image_of(100, seed=99))
    obj = transfer_object(store, runtime)
    obj.invoke(1, initiate_data(IDENTIFIER, 100), CLIENT)
    obj.invoke(2, block_data(0, image_of(100)), CLIENT)
    assert refused(lambda: obj.invoke(3, Data.integer(0), CLIENT)) == OTHER_REASON
    assert obj.get(6, CLIENT) == Data.enum(4) and obj.get(7, CLIENT) == Data.array([])
    assert runtime.events == [(51, CLIENT)]
    assert refused(lambda: obj.invoke(4, Data.integer(0), CLIENT)) == OTHER_REASON  # never activated
    assert runtime.activations == []


OCTETS, NUMBER = Data.octet_string(b"x"), Data.double_long_unsigned(100)
WRONG_TYPES = [
    # (method or attribute, data)
    *[("initiate", d) for d in (
        None, Data.null(), OCTETS, Data.structure([OCTETS]), Data.structure([OCTETS, NUMBER, NUMBER]),
        Data.array([OCTETS, NUMBER]), Data.structure([NUMBER, OCTETS]),
        Data.structure([Data.visible_string("x"), NUMBER]), Data.structure([OCTETS, Data.long_unsigned(100)]),
        Data.structure([OCTETS, Data.double_long(100)]), Data.structure([OCTETS, Data.long64_unsigned(100)]))],
    *[("block", d) for d in (
        None, Data.null(), Data.structure([Data.double_long_unsigned(0)]), Data.structure([OCTETS, NUMBER]),
        Data.structure([Data.long_unsigned(0), OCTETS]), Data.structure([Data.double_long_unsigned(0), Data.null()]),
        Data.structure([Data.double_long_unsigned(0), Data(DataType.BIT_STRING, "1")]))],
    *[(m, d) for m in ("verify", "activate") for d in (
        None, Data.null(), Data.unsigned(0), Data.enum(0), Data.long(0), Data.boolean(False), Data.structure([]))],
    *[("block_size", d) for d in (Data.long_unsigned(512), Data.unsigned(64), Data.double_long(512), Data.null(),
                                  Data.octet_string(b"\x00\x00\x02\x00"))],
    *[("enabled", d) for d in (Data.integer(0), Data.enum(0), Data.unsigned(1), Data.null())],
]
CALLS = {
    "initiate": lambda obj, d: obj.invoke(1, d, CLIENT), "block": lambda obj, d: obj.invoke(2, d, CLIENT),
    "verify": lambda obj, d: obj.invoke(3, d, CLIENT), "activate": lambda obj, d: obj.invoke(4, d, CLIENT),
    "block_size": lambda obj, d: obj.set(2, d, CLIENT), "enabled": lambda obj, d: obj.set(5, d, CLIENT),
}


def in_status_1(store, runtime):
    """A transfer under way: block 0 of 3 received."""
    obj = transfer_object(store, runtime)
    obj.invoke(1, initiate_data(IDENTIFIER, 3000), CLIENT)
    obj.invoke(2, block_data(0, runtime.expected[:1024]), CLIENT)
    return obj


@pytest.mark.parametrize("what, data", WRONG_TYPES, ids=[f"{w}-{i}" for i, (w, _) in enumerate(WRONG_TYPES)])
def test_a_wrong_type_is_type_unmatched_and_changes_nothing(store, runtime, what, data):
    obj = in_status_1(store, runtime)
    runtime.engine.close()  # the record as it stands, to compare
    before = (attributes(obj), store.get("image_transfer"), runtime.engine.image_path.read_bytes())
    assert refused(lambda: CALLS[what](obj, data)) == TYPE_UNMATCHED
    assert (attributes(obj), store.get("image_transfer"), runtime.engine.image_path.read_bytes()) == before


@pytest.mark.parametrize("what, data", [
    ("initiate", initiate_data(b"", 100)), ("initiate", initiate_data(b"x" * 65, 100)),
    ("initiate", initiate_data(IDENTIFIER, 0)), ("initiate", initiate_data(IDENTIFIER, MAX_SIZE + 1)),
    ("initiate", initiate_data(b"another", 3000)), ("initiate", initiate_data(IDENTIFIER, 3001)),
    ("block", block_data(3, bytes(1024))), ("block", block_data(0, bytes(1000))),
    ("block", block_data(2, bytes(1024))),  # the last of 3000 bytes is 952
    ("verify", Data.integer(0)), ("verify", Data.integer(1)), ("activate", Data.integer(0)),
    ("activate", Data.integer(-1)), ("block_size", Data.double_long_unsigned(512)),
])
def test_what_the_transfer_cannot_take_is_other_reason_and_changes_nothing(store, runtime, what, data):
    obj = in_status_1(store, runtime)
    runtime.engine.close()
    before = (attributes(obj), store.get("image_transfer"), runtime.engine.image_path.read_bytes())
    assert refused(lambda: CALLS[what](obj, data)) == OTHER_REASON
    assert (attributes(obj), store.get("image_transfer"), runtime.engine.image_path.read_bytes()) == before
    assert runtime.events == [] and runtime.activations == []


@pytest.mark.parametrize("value", [0, 63, 1025, 2**32 - 1])
def test_a_block_size_out_of_range_is_other_reason(store, runtime, value):
    obj = transfer_object(store, runtime)
    assert refused(lambda: obj.set(2, Data.double_long_unsigned(value), CLIENT)) == OTHER_REASON
    assert obj.get(2, CLIENT) == Data.double_long_unsigned(1024)


@pytest.mark.parametrize("what, data", [
    ("initiate", initiate_data(IDENTIFIER, 3000)), ("initiate", Data.null()), ("block", block_data(0, bytes(1024))),
    ("block", Data.null()), ("verify", Data.integer(0)), ("verify", None), ("activate", Data.integer(0)),
    ("activate", Data.unsigned(7)),
])
def test_disabled_transfers_refuse_every_method_whatever_its_data(store, runtime, what, data):
    obj = in_status_1(store, runtime)
    obj.set(5, Data.boolean(False), CLIENT)  # aborts the transfer under way
    assert attributes(obj) == [Data.double_long_unsigned(1024), Data(DataType.BIT_STRING, ""),
                               Data.double_long_unsigned(0), Data.boolean(False), Data.enum(0), Data.array([])]
    assert not runtime.engine.image_path.exists()
    before = (attributes(obj), store.get("image_transfer"))
    assert refused(lambda: CALLS[what](obj, data)) == READ_WRITE_DENIED
    assert (attributes(obj), store.get("image_transfer")) == before


def test_only_attributes_2_and_5_are_written(store, runtime):
    obj = transfer_object(store, runtime)
    for index in (1, 3, 4, 6, 7):
        assert refused(lambda: obj.set(index, obj.get(index, CLIENT), CLIENT)) == READ_WRITE_DENIED


def test_without_the_engine_bound_the_object_is_unavailable(store):
    obj = transfer_object(store, None)
    assert refused(lambda: obj.get(2, CLIENT)) == OBJECT_UNAVAILABLE
    assert refused(lambda: obj.invoke(1, initiate_data(IDENTIFIER, 10), CLIENT)) == OBJECT_UNAVAILABLE
    assert obj.get(1, CLIENT) == Data.octet_string(TRANSFER)


# -- through the DLMS server, with the model's entries ------------------------------------------------


class Session:
    def __init__(self, server: DlmsServer, sap: int, associate: bool = True) -> None:
        self.association = server.association(sap, "lan")
        if associate:
            client = ClientAssociation()
            client.on_aare(self.association.handle(client.aarq()))

    def act(self, ln: bytes, class_id: int, method: int, data: Data):
        request = action.ActionRequestNormal(0xC1, CosemMethodDescriptor(class_id, ln, method), data)
        response = decode_xdlms(self.association.handle(request.to_bytes()))
        return response if isinstance(response, ExceptionResponse) else response.result

    def write(self, ln: bytes, class_id: int, index: int, value: Data):
        request = set_.SetRequestNormal(0xC1, CosemAttributeDescriptor(class_id, ln, index), None, value)
        return decode_xdlms(self.association.handle(request.to_bytes())).result

    def read(self, ln: bytes, class_id: int, index: int) -> Data:
        """A GET, in blocks when the value is longer than a PDU."""
        exchange = GetExchange(CosemAttributeDescriptor(class_id, ln, index))
        request = exchange.first()
        while request is not None:
            request = exchange.feed(self.association.handle(request))
        return exchange.result


def test_an_upgrade_through_the_server(store, runtime):
    server = DlmsServer(directory(store, runtime), system_title=b"TESTMETR")
    management = Session(server, 1)
    fw = Session(server, 3, associate=False)  # pre-established: no AARQ
    image = runtime.expected
    assert management.read(TRANSFER, 18, 2) == Data.double_long_unsigned(1024)
    assert management.write(TRANSFER, 18, 2, Data.double_long_unsigned(64)) == SUCCESS
    blocks = math.ceil(len(image) / 64)  # 47: 46 of 64, one of 56
    # the FW update client may only send blocks
    assert fw.act(TRANSFER, 18, 1, initiate_data(IDENTIFIER, len(image))) == READ_WRITE_DENIED
    assert management.act(TRANSFER, 18, 1, initiate_data(IDENTIFIER, len(image))) == SUCCESS
    assert management.write(TRANSFER, 18, 2, Data.double_long_unsigned(128)) == OTHER_REASON  # after initiation
    parts = [image[i:i + 64] for i in range(0, len(image), 64)]
    assert len(parts) == blocks and len(parts[-1]) == len(image) - (blocks - 1) * 64
    lost = {5, 17, blocks - 1}  # broadcast blocks the meter never got
    for number, part in enumerate(parts):
        if number not in lost:
            assert fw.act(TRANSFER, 18, 2, block_data(number, part)) == SUCCESS
    assert fw.act(TRANSFER, 18, 3, Data.integer(0)) == READ_WRITE_DENIED
    assert management.act(TRANSFER, 18, 3, Data.integer(0)) == OTHER_REASON  # blocks missing
    assert management.read(TRANSFER, 18, 3) == Data(DataType.BIT_STRING,
                                                   "".join("0" if n in lost else "1" for n in range(blocks)))
    assert management.read(TRANSFER, 18, 4) == Data.double_long_unsigned(min(lost))
    # the missing ones again, then verify and the image to activate
    for number in sorted(lost):
        assert fw.act(TRANSFER, 18, 2, block_data(number, parts[number])) == SUCCESS
    assert management.read(TRANSFER, 18, 4) == Data.double_long_unsigned(blocks)
    assert management.act(TRANSFER, 18, 3, Data.integer(0)) == SUCCESS
    assert management.read(TRANSFER, 18, 6) == Data.enum(3)
    assert management.read(TRANSFER, 18, 7) == Data.array([Data.structure([
        Data.double_long_unsigned(len(image)), Data.octet_string(IDENTIFIER), Data.octet_string(SIGNATURE)])])
    assert fw.act(TRANSFER, 18, 4, Data.integer(0)) == READ_WRITE_DENIED
    assert management.act(TRANSFER, 18, 4, Data.integer(0)) == SUCCESS
    assert management.read(TRANSFER, 18, 6) == Data.enum(5)
    assert [ctx.client_sap for ctx in runtime.activations] == [1]
    assert [(code, ctx.client_sap) for code, ctx in runtime.events] == [(17, 1)]


def test_a_long_bitmap_is_read_in_blocks(store, runtime):
    """1 MiB in 64-byte blocks: 16384 bits, more than one PDU of the meter (1224 bytes)."""
    server = DlmsServer(directory(store, runtime), system_title=b"TESTMETR")
    management = Session(server, 1)
    assert management.write(TRANSFER, 18, 2, Data.double_long_unsigned(64)) == SUCCESS
    assert management.act(TRANSFER, 18, 1, initiate_data(IDENTIFIER, MAX_SIZE)) == SUCCESS
    blocks = MAX_SIZE // 64
    for number in (0, 1, blocks - 1):
        assert management.act(TRANSFER, 18, 2, block_data(number, bytes(64))) == SUCCESS
    assert management.read(TRANSFER, 18, 3) == Data(DataType.BIT_STRING, "11" + "0" * (blocks - 3) + "1")


def test_blocks_of_1024_bytes_fit_the_meters_pdu(store, runtime):
    server = DlmsServer(directory(store, runtime), system_title=b"TESTMETR")
    management = Session(server, 1)
    image = runtime.expected
    assert management.act(TRANSFER, 18, 1, initiate_data(IDENTIFIER, len(image))) == SUCCESS
    for number in range(math.ceil(len(image) / 1024)):
        assert management.act(TRANSFER, 18, 2, block_data(number, image[number * 1024:(number + 1) * 1024])) == SUCCESS
    assert management.act(TRANSFER, 18, 3, Data.integer(0)) == SUCCESS


def verified(store, runtime, clock: Clock | None = None):
    """A directory and server whose image is verified (through the class, as a client does it)."""
    d = directory(store, runtime, clock)
    obj = d.by_ln[TRANSFER][1]
    obj.invoke(1, initiate_data(IDENTIFIER, len(runtime.expected)), CLIENT)
    for number in range(3):
        obj.invoke(2, block_data(number, runtime.expected[number * 1024:(number + 1) * 1024]), CLIENT)
    obj.invoke(3, Data.integer(0), CLIENT)
    assert obj.get(6, CLIENT) == Data.enum(3)
    return d, DlmsServer(d, system_title=b"TESTMETR")


def test_the_activation_script_activates_with_the_meters_authority(store, runtime):
    d, server = verified(store, runtime)
    management = Session(server, 1)
    assert management.act(SCRIPTS, 9, 1, Data.long_unsigned(1)) == READ_WRITE_DENIED  # read only for clients
    assert server.run_script(SCRIPTS, 1) == SUCCESS
    assert runtime.engine.status == TransferStatus.ACTIVATION_INITIATED
    assert [ctx.client_sap for ctx in runtime.activations] == [0]  # the meter itself
    # run again while the activation is under way: refused, nothing else happens
    assert server.run_script(SCRIPTS, 1) == TEMPORARY_FAILURE
    assert len(runtime.activations) == 1


def test_the_activation_script_refuses_an_image_not_verified(store, runtime):
    server = DlmsServer(directory(store, runtime), system_title=b"TESTMETR")
    assert server.run_script(SCRIPTS, 1) == OTHER_REASON
    assert runtime.activations == [] and runtime.engine.status == TransferStatus.NOT_INITIATED


def test_the_activation_scheduler_activates_at_the_time_written(store, runtime):
    """The head-end writes execution_time of 0-0:15.0.2.255 (type 1: one date and time); the
    scheduler runs script 1 of 0-0:10.0.107.255 at that local time, not before."""
    start = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.timezone.utc).timestamp()
    clock = Clock(start)
    d, server = verified(store, runtime, clock)
    scheduler = SchedulerEngine.for_directory(d, store, BERLIN, lambda ln, selector: server.run_script(ln, selector))
    management = Session(server, 1)
    # 2026-03-10 14:30:00 local (CET, UTC+1) = 13:30 UTC
    when = Data.array([Data.structure([Data.octet_string(bytes([14, 30, 0, 0])),
                                       Data.octet_string(bytes([0x07, 0xEA, 3, 10, 0xFF]))])])
    assert management.write(SCHEDULER, 22, 2, Data.structure([Data.octet_string(SCRIPTS),
                                                              Data.long_unsigned(2)])) == READ_WRITE_DENIED
    assert management.write(SCHEDULER, 22, 4, when) == SUCCESS
    at = dt.datetime(2026, 3, 10, 13, 30, tzinfo=dt.timezone.utc).timestamp()
    scheduler.advance(start, at - 1, Passage.RUNNING)
    assert runtime.activations == [] and runtime.engine.status == TransferStatus.VERIFICATION_SUCCESSFUL
    scheduler.advance(at - 1, at + 60, Passage.RUNNING)
    assert [ctx.client_sap for ctx in runtime.activations] == [0]
    assert runtime.engine.status == TransferStatus.ACTIVATION_INITIATED


def test_the_fw_update_client_cannot_read(store, runtime):
    server = DlmsServer(directory(store, runtime), system_title=b"TESTMETR")
    fw = Session(server, 3, associate=False)
    request = get.GetRequestNormal(0xC1, CosemAttributeDescriptor(18, TRANSFER, 6), None)
    response = decode_xdlms(fw.association.handle(request.to_bytes()))
    assert isinstance(response, ExceptionResponse) or response.result == READ_WRITE_DENIED


def test_the_model_entries_in_the_profiles():
    for profile in ("ksmw", "idis"):
        objects = {str(o.obis): o for o in ObjectModel.load(profile).objects}
        transfer = objects["0-0:44.0.0.255"]
        assert (transfer.class_id, transfer.version, transfer.config["image_transfer"]) == \
            (18, 0, "firmware.image_transfer")
        # the head-end (management) and the local tool over the optical port (maintenance) upgrade
        for client in ("management", "maintenance"):
            rights = transfer.access_for(client)
            assert (sorted(rights.read), sorted(rights.write), sorted(rights.execute)) == \
                ([1, 2, 3, 4, 5, 6, 7], [2, 5], [1, 2, 3, 4])
            assert sorted(objects["0-0:15.0.2.255"].access_for(client).write) == [4]
            assert not objects["0-0:10.0.107.255"].access_for(client).execute
        fw = transfer.access_for("fw_update")
        assert (sorted(fw.read), sorted(fw.write), sorted(fw.execute)) == ([], [], [2])
        assert objects["0-0:15.0.2.255"].class_id == 22 and objects["0-0:10.0.107.255"].class_id == 9
        others = set(ObjectModel.load(profile).clients) - {"management", "maintenance", "fw_update"}
        assert not others & set(transfer.access)

