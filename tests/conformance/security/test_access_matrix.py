"""The full access matrix of the ksmw model against the running meter (companion standard §3.6).

For every client of the model, every object and every attribute and method of its class,
the meter must grant exactly what `cosem/model/ksmw.toml` grants and demand exactly the
protection the client's security policy demands:

* GET of every attribute; SET of every attribute; ACTION of every method:
  granted -> not refused for access reasons (neither read-write-denied nor object-undefined);
  not granted -> read-write-denied if the object is visible to the client, object-undefined
  if it is not;
* every request of a secured client is sent again without the protection its policy
  demands (in clear, and with each demanded protection bit dropped): always refused with an
  exception-response; every response comes back with exactly the protection the policy
  demands for responses;
* the object list (Association LN attribute 2) of each client lists exactly the objects the
  model makes visible to it, with access_mode bits equal to the model's rights.

One in-process meter on a fixed clock; each client associates over the sans-io server with
its demo credentials (HLS 6 clients on the optical port "wz", HLS 7 ones on "lan").

What is written and called (the choice the matrix needs, since it touches every right):

* SET sends the value just read, which changes nothing: the IEC HDLC setup, the optical
  port objects, the security policy (the same policy is allowed: "only strengthened"), the
  clock (the clock is fixed at 12:00:00 UTC, so writing the time just read is a no-op; the
  test checks the time afterwards). The certification mode is never changed: its SET carries
  a null-data value, so a granted write ends in type-unmatched after the access check.
* ACTION: the clock's adjust_to_quarter / adjust_to_minute (no-ops at 12:00:00) and
  shift_time(0); the maximum-demand resets (this meter is thrown away); get_frame_counter
  with a 64-byte challenge (read-only); every other method (reply_to_HLS_authentication
  after authentication, change_HLS_secret, all IC 64 methods: key transfer, certificates,
  key pairs, security_activate) with null-data parameters, which the class refuses with
  type-unmatched or other-reason after the access check: no key, certificate or policy
  is touched. Methods that are not granted get the same harmless parameters.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import pytest

from smartmeter.cosem.classes.base import REGISTRY
from smartmeter.cosem.docs import access_rights_markdown
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.objectmodel import ClientDef, ObjectDef, ObjectModel
from smartmeter.dlms.apdu import acse, action, ciphered, get
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, CosemMethodDescriptor, DataAccessResult
from smartmeter.dlms.apdu.errors import ExceptionResponse, StateError
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import (
    AccessDenied, ActionExchange, ClientAssociation, ClientSecurity, CounterStore, Exchange, GetExchange,
    SecurityPolicy, SetExchange,
)
from smartmeter.dlms.security.suites import SC_AUTHENTICATION, SC_ENCRYPTION
from smartmeter.hes.credentials import load_credentials
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

# 2026-03-10 12:00:00 UTC: on a quarter hour, so adjust_to_quarter/minute change nothing
FIXED_NOW = 1773144000.0
CURRENT_ASSOCIATION = bytes([0, 0, 40, 0, 0, 255])
CLOCK = bytes([0, 0, 1, 0, 0, 255])

MODEL = ObjectModel.load("ksmw")
ACCESS_RIGHTS_DOC = Path(__file__).resolve().parents[3] / "docs" / "access-rights.md"
ASSOCIATING = [c for c in MODEL.clients.values() if not c.push_only and not c.pre_established]

RWD = int(DataAccessResult.READ_WRITE_DENIED)
UNDEFINED = int(DataAccessResult.OBJECT_UNDEFINED)
ACCESS_REFUSALS = {RWD, UNDEFINED}

# Server behaviour that disagrees with the model, found by this matrix and reported to the
# lead: (client, OBIS, kind, index) -> the result the meter gives today. Each entry is
# asserted as it is, so the test fails (and the entry must go) once the meter is fixed.
# IC 23 IEC HDLC setup implements no setters: the model grants management and maintenance
# write access to attributes 2..9, the meter answers read-write-denied.
KNOWN_DISCREPANCIES: dict[tuple[str, str, str, int], int] = {}


def interface_of(client: ClientDef) -> str:
    """HLS 6 clients are local tools (optical port); the others use the LAN."""
    if client.mechanism == 6:
        return "wz"
    return "lan" if "lan" in client.interfaces else client.interfaces[0]


def method_parameters(obj: ObjectDef, method: int) -> Data | None:
    """Parameters that are harmless whether or not the method is granted (see the module doc)."""
    if obj.class_id == 8:
        return {1: Data.integer(0), 3: Data.integer(0), 6: Data.long(0)}[method]
    if obj.class_id in (4, 5, 7):
        return Data.integer(0)
    if obj.class_id == 12544:
        return Data.octet_string(bytes(range(64)))
    return Data.null()


# state-changing writes that are never carried out: a mistyped value shows the access check passed
NEVER_WRITTEN = {"0-0:94.43.143.255"}  # certification mode


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    clock = MeterClock(source=lambda: FIXED_NOW)
    # a poly-phase meter: it has every object of the model (L2 and L3 values too)
    m = Meter(MeterConfig(data_dir=tmp_path_factory.mktemp("matrix"), backfill_days=1, meter_type=300), clock=clock)
    yield m
    m.close()


@pytest.fixture(scope="module")
def counters():
    """Each client's invocation counters, in memory, across the module's associations."""
    return {c.name: CounterStore() for c in MODEL.clients.values()}


def is_exception(apdu: bytes) -> bool:
    return isinstance(decode_xdlms(apdu), ExceptionResponse)


class Session:
    """One client's association with the in-process meter, driven APDU by APDU."""

    def __init__(self, meter: Meter, client: ClientDef, counters: CounterStore) -> None:
        self.meter, self.client = meter, client
        self.problems: list[str] = []
        credentials = load_credentials(Path(meter.config.data_dir) / "credentials" / f"{client.name}.json")
        self.security: ClientSecurity = dataclasses.replace(credentials.security, invocation_counter=counters)
        self.policy = int(self.security.policy)
        self.server = meter.server.association(client.sap, interface_of(client))
        self.association = ClientAssociation(security=self.security)
        self.association.on_aare(self.server.handle(self.association.aarq()))
        if self.association.needs_hls:
            self._drive(self.association.hls_exchange())
        assert self.association.authenticated and self.server.authenticated

    def close(self) -> None:
        self.server.handle(self.association.release_request())

    # -- protection ---------------------------------------------------------------------------
    def _check_response_protection(self, response: bytes, what: str) -> None:
        if not self.association.ciphered or response[:1] == b"\xe0":
            return  # general-block-transfer: the protected APDU is inside, checked as a whole
        if response[0] not in ciphered.CIPHERED_TAGS:
            if self.policy & (SecurityPolicy.AUTHENTICATED_RESPONSE | SecurityPolicy.ENCRYPTED_RESPONSE):
                self.problems.append(f"{what}: unprotected response {response[:1].hex()}")
            return
        sc = ciphered.decode_ciphered(response).content.security_control
        wanted = ((SC_AUTHENTICATION if self.policy & SecurityPolicy.AUTHENTICATED_RESPONSE else 0)
                  | (SC_ENCRYPTION if self.policy & SecurityPolicy.ENCRYPTED_RESPONSE else 0))
        if sc & (SC_AUTHENTICATION | SC_ENCRYPTION) != wanted:
            self.problems.append(f"{what}: response security control 0x{sc:02X}, policy demands 0x{wanted:02X}")

    def _drive(self, exchange: Exchange):
        request = exchange.first()
        while request is not None:
            response = self.server.handle(request)
            self._check_response_protection(response, exchange.what)
            request = exchange.feed(response)
        return exchange.result

    def _weaker(self, plain: bytes) -> list[tuple[str, bytes]]:
        """`plain` as the policy demands it, minus each demanded request protection in turn."""
        variants = [("in clear", plain)]
        full = (SC_AUTHENTICATION if self.policy & SecurityPolicy.AUTHENTICATED_REQUEST else 0) \
            | (SC_ENCRYPTION if self.policy & SecurityPolicy.ENCRYPTED_REQUEST else 0)
        for bit, name in ((SC_AUTHENTICATION, "without authentication"), (SC_ENCRYPTION, "without encryption")):
            if full & bit and full & ~bit:
                sc = (full & ~bit) | self.security.suite
                apdu = ciphered.GLO_TAG_FOR_PLAIN[plain[0]].protect(
                    sc, self.security.ek, self.security.ak, self.security.client_system_title,
                    self.association.counters.reserve(), plain).to_bytes()
                variants.append((name, apdu))
        return variants

    def check_unprotected_refused(self, exchange: Exchange) -> None:
        if not self.policy:
            return
        for how, apdu in self._weaker(exchange.first()):
            answer = self.server.handle(apdu)
            if answer is None or not is_exception(answer):
                self.problems.append(f"{exchange.what} {how}: not refused ({answer[:1].hex() if answer else None})")

    # -- services -------------------------------------------------------------------------------
    def outcome(self, make: Callable[[], Exchange]) -> tuple[int, object]:
        """(0, result) or (the refusing Data-Access-/Action-Result, None); protected as the policy says.
        `make` builds the exchange (twice: first() of a block transfer moves it on)."""
        self.check_unprotected_refused(make())
        try:
            return 0, self._drive(self.association.secure(make()))
        except AccessDenied as denied:
            return int(denied.result), None

    def get(self, class_id: int, ln: bytes, attribute: int):
        return self.outcome(lambda: GetExchange(CosemAttributeDescriptor(class_id, ln, attribute)))

    def set(self, class_id: int, ln: bytes, attribute: int, value: Data):
        pdu = self.association.negotiated.server_max_receive_pdu_size - self.association.protection_overhead
        return self.outcome(lambda: SetExchange(CosemAttributeDescriptor(class_id, ln, attribute), value, pdu))

    def action(self, class_id: int, ln: bytes, method: int, parameters: Data | None):
        return self.outcome(lambda: ActionExchange(CosemMethodDescriptor(class_id, ln, method), parameters))


@pytest.fixture
def session(meter, counters):
    opened = []

    def open_(client: ClientDef) -> Session:
        s = Session(meter, client, counters[client.name])
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


def _expect(granted: bool, visible: bool) -> str:
    return "granted" if granted else "read-write-denied" if visible else "object-undefined"


def _judge(problems: list[str], key: tuple[str, str, str, int], granted: bool, visible: bool, result: int) -> None:
    client, obis, kind, index = key
    if key in KNOWN_DISCREPANCIES:
        if result != KNOWN_DISCREPANCIES[key]:
            problems.append(f"{client} {kind} {obis}/{index}: known discrepancy changed: now {result} "
                            f"(remove it from KNOWN_DISCREPANCIES if the meter is fixed)")
        return
    if granted:
        ok = result not in ACCESS_REFUSALS
    else:
        ok = result == (RWD if visible else UNDEFINED)
    if not ok:
        problems.append(f"{client} {kind} {obis}/{index}: expected {_expect(granted, visible)}, got result {result}")


@pytest.mark.parametrize("client", ASSOCIATING, ids=lambda c: c.name)
def test_every_right_of_every_object_is_exactly_the_model(session, meter, client):
    s = session(client)
    problems = s.problems
    results = {"get": {}, "set": {}, "action": {}}
    for o in MODEL.objects:
        ic = REGISTRY.classes[o.class_id]
        ln, obis = o.obis.to_bytes(), str(o.obis)
        visible = client.name in o.access
        rights = o.access_for(client.name)
        for attribute in ic.attributes:
            result, value = s.get(o.class_id, ln, attribute)
            _judge(problems, (client.name, obis, "get", attribute), attribute in rights.read, visible, result)
            results["get"][obis, attribute] = result
            if obis in NEVER_WRITTEN or value is None:
                value = Data.null()
            result, _ = s.set(o.class_id, ln, attribute, value)
            _judge(problems, (client.name, obis, "set", attribute), attribute in rights.write, visible, result)
            results["set"][obis, attribute] = result
        for method in ic.methods:
            result, _ = s.action(o.class_id, ln, method, method_parameters(o, method))
            _judge(problems, (client.name, obis, "action", method), method in rights.execute, visible, result)
            results["action"][obis, method] = result
    # the writes and calls left the clock alone (it is fixed at 12:00:00 UTC)
    assert s.get(8, CLOCK, 2)[1].value == meter.clock.cosem(int(FIXED_NOW))
    assert not problems, "\n".join(problems)
    # and the matrix really exercised the rights: something was read, and where the client is
    # refused anything, both kinds of refusal occurred
    assert 0 in results["get"].values()
    assert UNDEFINED in results["get"].values() or all(client.name in o.access for o in MODEL.objects)
    assert RWD in results["set"].values()


def test_granted_reads_succeed(session):
    """Granted reads do not just escape the access refusals: they return values (one client
    that can read nearly everything)."""
    s = session(MODEL.clients["maintenance"])
    failures = []
    for o in MODEL.objects:
        for attribute in sorted(o.access_for("maintenance").read):
            result, _ = s.get(o.class_id, o.obis.to_bytes(), attribute)
            if result:
                failures.append((str(o.obis), attribute, result))
    assert not failures, failures
    assert not s.problems, s.problems


# -- object lists ------------------------------------------------------------------------------


def _object_list(value: Data) -> dict[str, tuple]:
    """OBIS -> (class_id, version, {attribute: access_mode}, {method: access_mode})."""
    out = {}
    for entry in value.value:
        class_id, version, ln, rights = entry.value
        attributes, methods = rights.value
        attr_modes = {a.value[0].value: a.value[1].value for a in attributes.value}
        method_modes = {m.value[0].value: m.value[1].value for m in methods.value}
        obis = "{}-{}:{}.{}.{}.{}".format(*ln.value)
        assert obis not in out, f"{obis} twice in the object list"
        out[obis] = (class_id.value, version.value, attr_modes, method_modes)
    return out


def _check_object_list(listed: dict[str, tuple], client: ClientDef) -> list[str]:
    problems = []
    visible = {str(o.obis): o for o in MODEL.objects if client.name in o.access}
    if set(listed) != set(visible):
        problems.append(f"{client.name}: listed but invisible {sorted(set(listed) - set(visible))}, "
                        f"visible but not listed {sorted(set(visible) - set(listed))}")
    security_bits = client.security_policy
    for obis in set(listed) & set(visible):
        o = visible[obis]
        ic = REGISTRY.classes[o.class_id]
        class_id, version, attr_modes, method_modes = listed[obis]
        if (class_id, version) != (o.class_id, o.version):
            problems.append(f"{client.name} {obis}: class {class_id} v{version}, model {o.class_id} v{o.version}")
        rights = o.access_for(client.name)
        if set(attr_modes) != set(ic.attributes) or set(method_modes) != set(ic.methods):
            problems.append(f"{client.name} {obis}: the access rights do not list every attribute and method")
        for attribute, mode in attr_modes.items():
            wanted = (1 if attribute in rights.read else 0) | (2 if attribute in rights.write else 0)
            # bits 2..7 (Association LN v3) name the protection an access needs: either not
            # given (0) or exactly the client's policy for an accessible attribute
            if mode & 3 != wanted or mode & 0xFC not in (0, security_bits if wanted else 0):
                problems.append(f"{client.name} {obis} attribute {attribute}: access_mode 0x{mode:02X}, model "
                                f"{'r' if wanted & 1 else '-'}{'w' if wanted & 2 else '-'}")
        for method, mode in method_modes.items():
            wanted = 1 if method in rights.execute else 0
            if mode & 1 != wanted or mode & 0xFC not in (0, security_bits if wanted else 0):
                problems.append(f"{client.name} {obis} method {method}: access_mode 0x{mode:02X}, "
                                f"model {'x' if wanted else '-'}")
    return problems


@pytest.mark.parametrize("client", ASSOCIATING, ids=lambda c: c.name)
def test_object_list_is_exactly_what_the_model_makes_visible(session, client):
    s = session(client)
    result, value = s.get(15, CURRENT_ASSOCIATION, 2)
    assert result == 0
    problems = _check_object_list(_object_list(value), client)
    assert not problems and not s.problems, "\n".join(problems + s.problems)


def test_association_objects_of_other_clients_list_their_rights(session):
    """The management client reads the object list of every other client's Association LN."""
    s = session(MODEL.clients["management"])
    problems = []
    for o in MODEL.objects:
        described = o.config.get("client")
        if o.class_id != 15 or described is None:
            continue
        result, value = s.get(15, o.obis.to_bytes(), 2)
        assert result == 0, (str(o.obis), result)
        problems += _check_object_list(_object_list(value), MODEL.clients[described])
    assert not problems and not s.problems, "\n".join(problems + s.problems)


# -- clients that never associate, and interfaces ------------------------------------------------


def _plain_aarq() -> bytes:
    return ClientAssociation().aarq()


@pytest.mark.parametrize("client", list(MODEL.clients.values()), ids=lambda c: c.name)
def test_clients_are_refused_on_interfaces_not_theirs(meter, client):
    for interface in ("lan", "wz", "h1"):
        if interface in client.interfaces and not client.push_only and not client.pre_established:
            continue
        aare = acse.decode_acse(meter.server.association(client.sap, interface).handle(_plain_aarq()))
        assert aare.result != acse.AssociationResult.ACCEPTED, (client.name, interface)


def test_pre_established_fw_update_client_may_only_send_image_blocks(meter):
    """§3.6.4: the FW update client is always associated (ACTION only) and sees only what the
    model grants it: in ksmw image_block_transfer of the image transfer 0-0:44.0.0.255. Every
    method of every other object is undefined for it, every other method of that object denied."""
    fw = MODEL.clients["fw_update"]
    server = meter.server.association(fw.sap, "lan")
    granted = {o.obis: o.access[fw.name].execute for o in MODEL.objects if fw.name in o.access}
    assert granted == {Obis.parse("0-0:44.0.0.255"): frozenset({2})}
    problems = []
    for o in MODEL.objects:
        for method in REGISTRY.classes[o.class_id].methods:
            request = action.ActionRequestNormal(0xC1, CosemMethodDescriptor(o.class_id, o.obis.to_bytes(), method),
                                                 method_parameters(o, method)).to_bytes()
            result = int(decode_xdlms(server.handle(request)).result)
            if o.obis not in granted:
                ok = result == UNDEFINED
            elif method in granted[o.obis]:  # taken, and refused only by the transfer's state
                ok = result not in (UNDEFINED, DataAccessResult.READ_WRITE_DENIED)
            else:
                ok = result == DataAccessResult.READ_WRITE_DENIED
            if not ok:
                problems.append(f"fw_update action {o.obis}/{method}: {result}")
    assert not problems, problems
    # GET was not negotiated for it
    get_request = get.GetRequestNormal(0xC1, CosemAttributeDescriptor(1, bytes([0, 0, 42, 0, 0, 255]), 2), None)
    response = decode_xdlms(server.handle(get_request.to_bytes()))
    assert isinstance(response, ExceptionResponse) and response.state_error == StateError.SERVICE_NOT_ALLOWED


def test_secured_clients_cannot_use_a_plain_association(meter):
    """A secured client that tries the unciphered context with no authentication is refused
    at association time (so no request can ever go out without its protection)."""
    for client in ASSOCIATING:
        if not client.ciphered:
            continue
        aare = acse.decode_acse(meter.server.association(client.sap, interface_of(client)).handle(_plain_aarq()))
        assert aare.result != acse.AssociationResult.ACCEPTED, client.name


# -- the generated document -------------------------------------------------------------------


def test_access_rights_document_is_current():
    """docs/access-rights.md is what the model gives today (regenerate: run this file)."""
    assert ACCESS_RIGHTS_DOC.read_text() == access_rights_markdown(MODEL), (
        "docs/access-rights.md is stale: .venv/bin/python tests/conformance/security/test_access_matrix.py")


def test_access_rights_document_names_every_right():
    """Every granted index appears by name under its client (the table is not just numbers)."""
    text = access_rights_markdown(MODEL)
    sections = {name: text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0] for name in MODEL.clients}
    for o in MODEL.objects:
        ic = REGISTRY.classes[o.class_id]
        for client, rights in o.access.items():
            row = next(line for line in sections[client].splitlines() if line.startswith(f"| {o.obis} |"))
            cells = [cell.strip() for cell in row.split("|")[4:7]]
            for cell, indexes, table in zip(cells, (rights.read, rights.write, rights.execute),
                                            (ic.attributes, ic.attributes, ic.methods)):
                assert cell == (", ".join(f"{i} {table[i]}" for i in sorted(indexes)) or "–"), (client, row)
        for client in set(MODEL.clients) - set(o.access):
            assert f"| {o.obis} |" not in sections[client]
    for client in MODEL.clients.values():
        assert f"- security policy: 0x{client.security_policy:02X}" in sections[client.name]


if __name__ == "__main__":
    ACCESS_RIGHTS_DOC.write_text(access_rights_markdown(MODEL))
    print(f"wrote {ACCESS_RIGHTS_DOC}")
