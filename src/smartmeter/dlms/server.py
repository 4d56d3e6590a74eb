"""The DLMS/COSEM server application layer, sans-io: request APDU bytes in, response bytes out.

`DlmsServer` is the logical device (object directory and policy). Each transport connection
gets one `ServerAssociation` per client SAP; it runs ACSE (AARQ/AARE, RLRQ/RLRE), then the
xDLMS services with access checks from the object model, block transfer both ways, and the
error responses of the Green Book / IDIS P2 §8.2.3 for everything that goes wrong.
"""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import CosemAccessError, RequestContext, Selection
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.objectmodel import Access, ClientDef, ObjectDef, ObjectDirectory
from smartmeter.dlms.apdu import acse, get, set as set_, action, access
from smartmeter.dlms.apdu.common import (
    ActionResult, CosemAttributeDescriptor, CosemMethodDescriptor, DataAccessResult, SelectiveAccessDescriptor,
)
from smartmeter.dlms.apdu.errors import ConfirmedServiceError, ExceptionResponse, ServiceError, StateError
from smartmeter.dlms.apdu.gbt import GENERAL_BLOCK_TRANSFER_TAG, GeneralBlockTransfer
from smartmeter.dlms.apdu.initiate import Conformance, InitiateRequest, InitiateResponse
from smartmeter.dlms.apdu.ciphered import CIPHERED_TAGS, GeneralGloCiphering
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.suites import SecurityControl
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.security.context import (
    AUTHENTICATED_RESPONSE, ENCRYPTED_RESPONSE, REQUEST_BITS, SecurityManager,
)
from smartmeter.dlms.security.errors import SecurityError
from smartmeter.dlms.server_security import AssociationSecurity, MeterKeys, SecurityRefusal, Wrapping
from smartmeter.errors import DecodeError, SmartmeterError
from smartmeter.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

MAX_PDU_SIZE = 1224  # companion standard §3.3.1, both directions
MIN_CLIENT_PDU_SIZE = 64  # below this no GET response with block header fits usefully
MAX_REASSEMBLED = 64 * 1024  # bound for a request arriving in blocks (GBT or service-specific)
# a protected answer covers the whole APDU: one that needs GBT is produced in full, within this
MAX_PROTECTED_GBT_RESPONSE = 256 * 1024
# the data an ACCESS answer carries (all specifications are carried out at once, in order)
MAX_ACCESS_RESPONSE = 256 * 1024
BLOCK_HEADER = 16  # room for the header of a service-specific block response
GBT_HEADER = 9  # tag, block-control, block-number, block-number-ack, length of block-data (≤ 3)
MAX_LIST_ITEMS = 32  # with-list requests: ≥ 16 must be supported (§3.3.1)
MAX_SCRIPT_NESTING = 4  # a script may run another script table's script, this deep at most

SERVER_CONFORMANCE = (
    Conformance.GENERAL_PROTECTION | Conformance.GENERAL_BLOCK_TRANSFER
    | Conformance.ATTRIBUTE0_SUPPORTED_WITH_GET | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
    | Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE | Conformance.BLOCK_TRANSFER_WITH_ACTION
    | Conformance.MULTIPLE_REFERENCES | Conformance.DATA_NOTIFICATION | Conformance.ACCESS
    | Conformance.GET | Conformance.SET | Conformance.SELECTIVE_ACCESS | Conformance.ACTION
)

CURRENT_ASSOCIATION = bytes([0, 0, 40, 0, 0, 255])
APP_CONTEXT_LN = 1
APP_CONTEXT_LN_CIPHERED = 3
DLMS_VERSION = 6

# ConfirmedServiceError initiate values (Green Book): carried in AARE user-information
INITIATE_DLMS_VERSION_TOO_LOW = 1
INITIATE_INCOMPATIBLE_CONFORMANCE = 2
INITIATE_PDU_SIZE_TOO_SHORT = 3
SERVICE_ERROR_INITIATE = 6
CONFIRMED_SERVICE_INITIATE_ERROR = 1


def _refusal(state: StateError, service: ServiceError, counter: int | None = None) -> bytes:
    """An exception-response APDU (Green Book 9.3.x)."""
    return ExceptionResponse(state, service, counter).to_bytes()


NOT_POSSIBLE = (StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
NOT_SUPPORTED = (StateError.SERVICE_NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
UNKNOWN = (StateError.SERVICE_UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED)
MALFORMED = (StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON)
TOO_LONG = (StateError.SERVICE_NOT_ALLOWED, ServiceError.PDU_TOO_LONG)


def _action_result(result: DataAccessResult) -> ActionResult:
    try:
        return ActionResult(int(result))
    except ValueError:
        return ActionResult.OTHER_REASON


WRITE_ATTRIBUTE = 1  # service_id of a script action (Blue Book 4.5.2)
EXECUTE_METHOD = 2
SCRIPT_TABLE_CLASS = 9

# The meter's own authority: the requests of its scripts. Not a client of the model (SAP 0 is no
# client address), so no peer can associate as it.
LOCAL_CLIENT = ClientDef("meter", 0, (), 0, "the meter itself: actions of its scripts")
_EVERY_INDEX = frozenset(range(256))


@dataclass(frozen=True, slots=True)
class LocalAction:
    """One request the meter makes of its own objects (a script's action_specification)."""

    service: int  # WRITE_ATTRIBUTE or EXECUTE_METHOD
    class_id: int
    logical_name: bytes
    index: int  # attribute or method
    parameter: Data | None = None


def protect_notification(context, system_title: bytes, notification: bytes) -> bytes:
    """`notification` in general-glo-ciphering for the client of `context`, as its policy asks of
    what the meter sends: encrypted, and authenticated when the policy says so (the Data Readout
    client's pushes are both, the consumer push on H1 is encrypted only), with the client's
    global keys, `system_title` and its next sending counter (durable before it is used;
    CounterExhaustedError at the maximum). A policy that does not encrypt is refused: a push
    is never sent in clear."""
    policy = context.policy
    if not policy & ENCRYPTED_RESPONSE:
        raise SecurityRefusal("policy", f"the {context.name} client's policy 0x{policy:02X} does not encrypt: "
                                        "a push is never sent in clear")
    authenticated = bool(policy & AUTHENTICATED_RESPONSE)
    return GeneralGloCiphering.protect(SecurityControl(context.suite, authenticated, True), context.ek,
                                       context.ak if authenticated else None, system_title, context.next_tx(),
                                       notification).to_bytes()

class DlmsServer:
    """One logical device: what it holds and who may talk to it on which interface."""

    def __init__(self, directory: ObjectDirectory, *, system_title: bytes, server_sap: int = 1,
                 max_pdu_size: int = MAX_PDU_SIZE, clock_bytes: Callable[[], bytes] = lambda: b"",
                 on_event: Callable[[str, dict], None] | None = None, security: SecurityManager | None = None,
                 keys: MeterKeys | None = None, say: RateLimitedLog | None = None) -> None:
        self.directory = directory
        self.security = security  # per-client security contexts (None: only unsecured clients work)
        self.keys = keys
        # security-relevant happenings (refused associations, ...) for the event logs and port guards
        self.on_event = on_event or (lambda name, fields: None)
        self.clock_bytes = clock_bytes  # the meter's time as 12-byte COSEM date-time
        self.system_title = system_title
        self.server_sap = server_sap
        self.max_pdu_size = max_pdu_size
        # §3.3.4: on WZ only one association at a time; LAN/WAN allow several
        self.single_association_interfaces = {"wz"}
        self.active: dict[str, "ServerAssociation"] = {}
        # conditions a peer can cause are logged once per minute at most, never a flood
        self.say = say if say is not None else RateLimitedLog(log)

    def claim(self, association: "ServerAssociation") -> bool:
        """Whether `association` may open now; on a single-association interface it takes the slot."""
        if association.interface not in self.single_association_interfaces:
            return True
        holder = self.active.get(association.interface)
        if holder is not None and holder is not association and holder.associated:
            return False
        self.active[association.interface] = association
        return True

    def protected_notification(self, client: str, body: Data, long_invoke_id_and_priority: int = 0) -> bytes:
        """A data-notification for `client`, protected as §3.3.1 says (`protect_notification`),
        with the meter's date-time inside."""
        context = self.security.context(client) if self.security else None
        if context is None:
            raise SecurityRefusal("policy", f"client {client} has no security context for protected pushes")
        notification = DataNotification(long_invoke_id_and_priority, self.clock_bytes(), body).to_bytes()
        return protect_notification(context, self.system_title, notification)

    def association(self, client_sap: int, interface: str, server_sap: int | None = None) -> "ServerAssociation":
        return ServerAssociation(self, client_sap, interface, self.server_sap if server_sap is None else server_sap)

    def run_locally(self, actions: Iterable[LocalAction], depth: int = 0) -> list[DataAccessResult]:
        """Carry out `actions` in order with the meter's own authority (LOCAL_CLIENT): the same
        object lookup, instance.set / instance.invoke and result mapping as a client's request,
        without the model's access table. Every action is attempted whatever the one before
        answered; the result of each is returned. `depth` counts scripts run from scripts.
        An action is anything with LocalAction's fields (a script table's ScriptAction)."""
        local = _LocalAssociation(self, depth)
        results = []
        for a in actions:
            if depth > MAX_SCRIPT_NESTING:
                result = DataAccessResult.OTHER_REASON
            elif a.service == WRITE_ATTRIBUTE:
                _, result = local._guarded(local.write, CosemAttributeDescriptor(a.class_id, a.logical_name, a.index),
                                           None, Data.null() if a.parameter is None else a.parameter)
            elif a.service == EXECUTE_METHOD:
                _, result = local._guarded(local.execute, CosemMethodDescriptor(a.class_id, a.logical_name, a.index),
                                           a.parameter)
            else:
                result = DataAccessResult.OTHER_REASON
            if result != DataAccessResult.SUCCESS:
                self.say("server.local_action_failed", "the meter's own %s of class %s %s index %s: %s",
                         "write" if a.service == WRITE_ATTRIBUTE else "execute", a.class_id,
                         bytes(a.logical_name).hex(), a.index, result.name.lower())
            results.append(result)
        return results

    def read_locally(self, class_id: int, logical_name: bytes, attribute: int) -> tuple[Data | None, DataAccessResult]:
        """An attribute as the meter itself reads it (its display): the same lookup and the object's
        own get as a client's request, with the meter's authority. -> (value or None, result)."""
        local = _LocalAssociation(self, 0)
        return local._guarded(local.read, CosemAttributeDescriptor(class_id, bytes(logical_name), attribute), None)

    def run_script(self, script_ln: bytes, selector: int) -> DataAccessResult:
        """Script `selector` of the script table `script_ln` (IC 9 execute), as a schedule or a
        monitor starts it: the callback the scheduler and the register monitors are given."""
        return self.run_locally([LocalAction(EXECUTE_METHOD, SCRIPT_TABLE_CLASS, bytes(script_ln), 1,
                                             Data.long_unsigned(selector))])[0]


class _ResponseStream:
    """The bytes of a long response, produced only as blocks are taken from it.

    `parts` yields the encoding piece by piece (for a with-list GET: one item at a time), so
    what is held is the current piece and the unsent rest of it, never the whole response.
    """

    def __init__(self, parts: Iterable[bytes]) -> None:
        self._parts: Iterator[bytes] = iter(parts)
        self._buffer = bytearray()
        self._done = False

    def _fill(self, n: int) -> None:
        while len(self._buffer) < n and not self._done:
            try:
                self._buffer += next(self._parts)
            except StopIteration:
                self._done = True

    def prepend(self, head: bytes) -> None:
        self._buffer[:0] = head

    def complete_within(self, n: int) -> bytes | None:
        """All the bytes if they are at most `n`; None (and nothing lost) if there are more."""
        self._fill(n + 1)
        return bytes(self._buffer) if self._done and len(self._buffer) <= n else None

    def take(self, n: int) -> tuple[bytes, bool]:
        """The next `n` bytes at most, and whether they are the last."""
        self._fill(n + 1)  # one byte more tells whether anything follows
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        return chunk, self._done and not self._buffer

    @property
    def held(self) -> int:
        """Bytes produced and not yet sent."""
        return len(self._buffer)


@dataclass
class _Outgoing:
    """A long response being sent block by block."""

    kind: str  # "get", "action" or "gbt"
    invoke_id_and_priority: int
    stream: _ResponseStream
    block_size: int
    next_block: int = 1

    def take(self) -> tuple[bytes, bool, int]:
        """The next block: (data, last, block number)."""
        chunk, last = self.stream.take(self.block_size)
        self.next_block += 1
        return chunk, last, self.next_block - 1


@dataclass
class _Incoming:
    """A long request arriving block by block (SET with datablocks, ACTION pblocks, GBT)."""

    kind: str
    invoke_id_and_priority: int
    first: object = None
    chunks: list[bytes] = field(default_factory=list)
    next_block: int = 1
    size: int = 0


class ServerAssociation:
    """The application association of one client over one transport connection."""

    def __init__(self, server: DlmsServer, client_sap: int, interface: str, server_sap: int) -> None:
        self.server = server
        self.client_sap = client_sap
        self.interface = interface
        self.server_sap = server_sap
        self.client: ClientDef | None = None
        self.associated = False
        self.conformance = 0
        self.application_context_name = APP_CONTEXT_LN
        self.mechanism = 0
        self.client_max_receive_pdu_size = MAX_PDU_SIZE
        self.server_max_receive_pdu_size = server.max_pdu_size
        self._outgoing: _Outgoing | None = None
        self._incoming: _Incoming | None = None
        self._gbt_in: _Incoming | None = None
        self._gbt_out: _Outgoing | None = None
        self.security: AssociationSecurity | None = None
        self._pdu_limit = MAX_PDU_SIZE  # what a plain response may take, protection overhead deducted
        self._answer_in_gbt = False  # serving a request that arrived in general-block-transfer
        self._after_response: list[Callable[[], None]] = []  # e.g. switch keys after SUCCESS went out
        self.calling_system_title: bytes | None = None  # from the AARQ's calling-AP-title
        self._session_open = False  # opened (and announced); its end is announced once
        client = server.directory.model.client_by_sap(client_sap)
        if client is not None and client.pre_established and interface in client.interfaces:
            # §3.6.4: this association always exists; it is never opened or released
            self.client = client
            self.associated = True
            self.conformance = int(Conformance.ACTION | Conformance.BLOCK_TRANSFER_WITH_ACTION)

    # -- entry point ------------------------------------------------------------------------
    def handle(self, apdu: bytes) -> bytes | None:
        """Answer one request APDU. Never raises for bad input: the peer gets the DLMS error."""
        try:
            return self._handle(bytes(apdu))
        except DecodeError as exc:
            log.debug("malformed APDU from client %s: %s", self.client_sap, exc)
            return _refusal(*MALFORMED)
        except Exception:  # a bug must cost one answer, not the meter's connection
            self.server.say("server.internal_error", "internal error while answering client %s\n%s", self.client_sap,
                            traceback.format_exc(), level=logging.ERROR)
            self._outgoing = self._incoming = self._gbt_in = self._gbt_out = None
            return _refusal(*MALFORMED)

    def held_bytes(self) -> int:
        """What this association holds for transfers in progress (bounded, see MAX_REASSEMBLED
        and the lazily produced responses): received blocks and produced, unsent response bytes."""
        held = 0
        for out in (self._outgoing, self._gbt_out):
            if out is not None:
                held += out.stream.held
        for inc in (self._incoming, self._gbt_in):
            if inc is not None:
                held += inc.size
        return held

    def _event(self, name: str, **fields) -> None:
        """Tell the meter of a happening of this association, with who it is (for the event logs)."""
        self.server.on_event(name, {"interface": self.interface, "client_sap": self.client_sap,
                                    "server_sap": self.server_sap, "system_title": self.calling_system_title, **fields})

    def _opened(self) -> None:
        self._session_open = True
        self._event("association_opened")

    def release(self) -> None:
        """Transport lost or closed: the association ends (companion standard §3.6.1)."""
        self._outgoing = self._incoming = self._gbt_in = self._gbt_out = None
        if self.client is not None and self.client.pre_established:
            return
        if self._session_open:
            self._session_open = False
            self._event("association_closed")
        self.associated = False
        if self.security is not None:
            self.security.set_dedicated_key(None)  # destroyed with the association (§3.5.3)
            self.security.end_authority()
        self.security = None

    server_conformance = int(SERVER_CONFORMANCE)
    script_depth = 0  # requests of a client; a local association says how deep in scripts it runs

    def run_script_actions(self, actions: Iterable[LocalAction]) -> list[DataAccessResult]:
        """A script started by this association's request (a script table's execute): its
        actions run with the meter's authority, one script level deeper."""
        return self.server.run_locally(actions, self.script_depth + 1)

    def after_response(self, action_: Callable[[], None]) -> None:
        """Run `action_` once the current response has been protected (e.g. a key switch, §3.5.3)."""
        self._after_response.append(action_)

    @property
    def requester_system_title(self) -> bytes:
        """The client's system title as the meter records it with what the client changed: the
        title it ciphers with, else the AARQ's calling-AP-title, else 8 zero bytes."""
        title = (self.security.client_system_title if self.security else None) or self.calling_system_title
        return title if title is not None and len(title) == 8 else bytes(8)

    @property
    def authenticated(self) -> bool:
        """HLS passes 3 and 4 done (or not needed)."""
        return self.security is None or self.mechanism not in (5, 6, 7) or self.security.authenticated

    def _handle(self, apdu: bytes) -> bytes | None:
        if not apdu:
            raise DecodeError("APDU", 0, "empty")
        if apdu[0] == GENERAL_BLOCK_TRANSFER_TAG:
            return self._general_block_transfer(apdu)
        return self._send(self._serve(apdu, reassembled=False))

    def _serve(self, apdu: bytes, reassembled: bool) -> bytes | _ResponseStream | None:
        """One complete request APDU (possibly reassembled from GBT blocks): its whole answer,
        as bytes or, when long, as a stream the caller sends in blocks."""
        if not apdu:
            raise DecodeError("APDU", 0, "empty")
        tag = apdu[0]
        if tag in (0x60, 0x62):
            return self._acse(apdu)
        if not self.associated:
            if tag in (0xC0, 0xC1, 0xC3, 0xD9, GENERAL_BLOCK_TRANSFER_TAG) or tag in CIPHERED_TAGS:
                return _refusal(*NOT_POSSIBLE)
            return _refusal(*UNKNOWN)
        if not reassembled and len(apdu) > self.server_max_receive_pdu_size:
            return _refusal(*TOO_LONG)
        if tag in CIPHERED_TAGS:
            return self._protected(apdu)
        if self.client is not None and self.client.security_policy & REQUEST_BITS:
            self.server.on_event("policy_violation", {"client_sap": self.client_sap, "interface": self.interface})
            return _refusal(*NOT_POSSIBLE)
        self._pdu_limit = self.client_max_receive_pdu_size
        response = self._plain(apdu)
        actions, self._after_response = self._after_response, []
        for action_ in actions:
            action_()
        return response

    def _send(self, response: bytes | _ResponseStream | None) -> bytes | None:
        """A whole answer onto the link: as it is when it fits, else in general-block-transfer
        when negotiated (Green Book 9.3.9), else refused rather than sent over-long."""
        if response is None:
            return None
        if isinstance(response, bytes) and len(response) <= self.client_max_receive_pdu_size:
            return response
        if self.associated and self.conformance & Conformance.GENERAL_BLOCK_TRANSFER:
            return self._start_gbt(response, 0)
        return _refusal(*TOO_LONG)

    def _protected(self, apdu: bytes) -> bytes | None:
        """A ciphered or signed request: unwrap, serve, protect the answer the same way."""
        if self.security is None:
            return _refusal(*NOT_POSSIBLE)
        try:
            plain, wrapping = self.security.unwrap(apdu)
        except SecurityRefusal as refusal:
            if refusal.kind == "replay":
                return ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.INVOCATION_COUNTER_ERROR,
                                         refusal.counter or 0).to_bytes()
            # §3.5.3: an APDU the meter cannot decrypt -> service-not-allowed / operation-not-possible
            return _refusal(*NOT_POSSIBLE)
        self._pdu_limit = self.client_max_receive_pdu_size - self.security.overhead(wrapping)
        response = self._plain(plain)
        if response is None:
            return None
        if isinstance(response, _ResponseStream):
            # protection covers the whole APDU, so a response that can only go in
            # general-block-transfer is produced in full first, within a bound
            response = response.complete_within(MAX_PROTECTED_GBT_RESPONSE)
            if response is None:
                self._after_response.clear()
                return _refusal(*TOO_LONG)
        try:
            protected = self.security.wrap(response, wrapping)
        except (SecurityError, SecurityRefusal) as exc:  # e.g. the sending counter is exhausted (§3.5.4)
            self.server.say("server.unprotectable", "response to client %s cannot be protected: %s", self.client_sap, exc)
            self._after_response.clear()
            return _refusal(*NOT_POSSIBLE)
        actions, self._after_response = self._after_response, []
        for action_ in actions:
            action_()
        return protected

    def _plain(self, apdu: bytes) -> bytes | _ResponseStream:
        """A plain xDLMS request of an open association: the plain answer."""
        tag = apdu[0]
        if tag not in (0xC0, 0xC1, 0xC3, 0xD9):
            if tag == GENERAL_BLOCK_TRANSFER_TAG:
                # GBT carries one complete APDU and is never carried itself (inside GBT or
                # inside protection): a misuse of a known service
                return _refusal(*MALFORMED)
            return _refusal(*UNKNOWN)
        request = decode_xdlms(apdu)
        if not self._service_negotiated(tag):
            return _refusal(*NOT_SUPPORTED)
        if not self.authenticated and not self._is_hls_reply(request):
            # between pass 2 and pass 4 only reply_to_HLS_authentication is allowed
            return _refusal(*NOT_POSSIBLE)
        response = self._service(request)
        if isinstance(response, (bytes, _ResponseStream)):
            return response
        return response.to_bytes()

    @staticmethod
    def _is_hls_reply(request) -> bool:
        return (isinstance(request, action.ActionRequestNormal) and request.descriptor.class_id == 15
                and request.descriptor.instance_id == CURRENT_ASSOCIATION and request.descriptor.method_id == 1)

    def reply_to_hls(self, f_stoc: bytes) -> bytes:
        """IC 15 method 1 on the current association: HLS pass 3 in, pass 4 out."""
        if self.security is None or self.mechanism not in (5, 6, 7):
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, "this association uses no HLS")
        if self.security.authenticated:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "already authenticated")
        try:
            response = self.security.reply_to_hls(f_stoc)
        except (SecurityError, ValueError) as exc:
            self._event("association_refused", diagnostic=int(acse.AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE),
                        reason=type(exc).__name__)
            self.after_response(self.release)  # the answer goes out, then the association ends
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "HLS authentication failed") from None
        self._opened()
        return response

    def _service_negotiated(self, tag: int) -> bool:
        needed = {0xC0: Conformance.GET, 0xC1: Conformance.SET, 0xC3: Conformance.ACTION, 0xD9: Conformance.ACCESS}[tag]
        return bool(self.conformance & needed)

    # -- ACSE -------------------------------------------------------------------------------
    def _acse(self, apdu: bytes) -> bytes:
        request = acse.decode_acse(apdu)
        if isinstance(request, acse.RLRQ):
            if not self.associated:
                # nothing to release: refused like every other service before an association
                # (an RLRE, even with reason not-finished, would confirm an association)
                return _refusal(*NOT_POSSIBLE)
            if self.client is not None and self.client.pre_established:
                # §3.6.4: a pre-established association is never released; say so
                return acse.RLRE(reason=acse.ReleaseResponseReason.NOT_FINISHED, user_information=None).to_bytes()
            user_info = None
            if request.user_information:
                user_info = self._initiate_response().to_bytes()
                if self.security is not None and self.associated:
                    # Table 5: in a ciphered association the RLRQ's InitiateRequest comes ciphered,
                    # and only a genuine one releases; the RLRE's answer goes back ciphered
                    try:
                        self.security.open_initiate(request.user_information)
                    except SecurityRefusal:
                        return acse.RLRE(reason=acse.ReleaseResponseReason.NOT_FINISHED, user_information=None).to_bytes()
                    user_info = self.security.protect_initiate_response(user_info)
            self.release()
            # §3.3.1: user-information in the RLRE only if the RLRQ carried one
            return acse.RLRE(reason=0, user_information=user_info).to_bytes()
        if isinstance(request, acse.AARQ):
            aare = self._associate(request)
            if aare.result == acse.AssociationResult.REJECTED_PERMANENT:
                self._event("association_refused", diagnostic=int(aare.diagnostic))
            elif aare.result == acse.AssociationResult.ACCEPTED and self.authenticated:
                self._opened()
            return aare.to_bytes()
        raise DecodeError("ACSE request", 0, f"{type(request).__name__} is not a request")

    def _aare(self, request: acse.AARQ, result: int, source: int, diagnostic: int, user_information: bytes | None,
              **fields) -> acse.AARE:
        # Appendix 1 / §3.3.3: a client that gives its system title learns the server's
        responding_ap_title = self.server.system_title if request.calling_ap_title else None
        values = dict(
            application_context_name=request.application_context_name, result=result, result_source=source,
            diagnostic=diagnostic, responding_ap_title=responding_ap_title, responding_ae_qualifier=None,
            responder_acse_requirements=False, mechanism_name=None, responding_authentication_value=None,
            user_information=user_information,
        )
        values.update(fields)
        return acse.AARE(**values)

    def _reject(self, request: acse.AARQ, diagnostic: int, user_information: bytes | None = None) -> acse.AARE:
        return self._aare(request, acse.AssociationResult.REJECTED_PERMANENT, acse.ResultSource.ACSE_SERVICE_USER,
                          diagnostic, user_information)

    def _initiate_error(self, value: int) -> bytes:
        return ConfirmedServiceError(CONFIRMED_SERVICE_INITIATE_ERROR, SERVICE_ERROR_INITIATE, value).to_bytes()

    def _associate(self, request: acse.AARQ) -> acse.AARE:
        self.release()
        client = self.server.directory.model.client_by_sap(self.client_sap)
        diag = acse.AcseServiceUserDiagnostic
        if client is None or self.interface not in client.interfaces or client.push_only or client.pre_established:
            self.server.say("server.aarq_refused", "AARQ from client SAP %s on %s refused", self.client_sap,
                            self.interface, level=logging.INFO)
            return self._reject(request, diag.NO_REASON_GIVEN)
        if not self.server.claim(self):
            self.server.say("server.aarq_busy", "AARQ on %s refused: another association is open there",
                            self.interface, level=logging.INFO)
            return self._aare(request, acse.AssociationResult.REJECTED_TRANSIENT, acse.ResultSource.ACSE_SERVICE_USER,
                              diag.NO_REASON_GIVEN, None)
        wanted_context = APP_CONTEXT_LN_CIPHERED if client.ciphered else APP_CONTEXT_LN
        if request.application_context_name != wanted_context:
            # §3.3.3: an unciphered context is refused when the client's policy needs ciphering
            return self._reject(request, diag.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
        mechanism = request.mechanism_name or 0
        if mechanism != client.mechanism:
            return self._reject(request, diag.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED)
        if not request.user_information:
            return self._reject(request, diag.NO_REASON_GIVEN, self._initiate_error(0))
        security = None
        user_information = request.user_information
        if client.ciphered:
            context = self.server.security.context(client.name) if self.server.security else None
            if context is None:
                return self._reject(request, diag.NO_REASON_GIVEN)
            security = AssociationSecurity(context, self.server.system_title, self.client_sap, mechanism,
                                           self.server.keys, self.server.on_event,
                                           kek=self.server.security.kek(context.suite),
                                           clock_bytes=self.server.clock_bytes)
            try:
                user_information = security.open_aarq(request.calling_ap_title, request.calling_authentication_value,
                                                      request.user_information)
            except SecurityRefusal as refusal:
                self.server.say("server.ciphered_aarq_refused", "ciphered AARQ from client SAP %s refused: %s",
                                self.client_sap, refusal, level=logging.INFO)
                if refusal.kind == "title":
                    return self._reject(request, diag.CALLING_AP_TITLE_NOT_RECOGNIZED)
                if refusal.kind == "authentication":
                    return self._reject(request, diag.AUTHENTICATION_REQUIRED)
                return self._reject(request, diag.NO_REASON_GIVEN)
        try:
            initiate = InitiateRequest.from_bytes(user_information)
        except DecodeError:
            return self._reject(request, diag.NO_REASON_GIVEN, self._initiate_error(0))
        if initiate.dedicated_key is not None and security is None:
            # a dedicated key is only ever sent ciphered (§3.3.3); in clear it is refused
            return self._reject(request, diag.NO_REASON_GIVEN, self._initiate_error(0))
        if initiate.proposed_dlms_version_number < DLMS_VERSION:
            return self._reject(request, diag.NO_REASON_GIVEN, self._initiate_error(INITIATE_DLMS_VERSION_TOO_LOW))
        conformance = int(initiate.proposed_conformance) & int(SERVER_CONFORMANCE)
        if not conformance:
            return self._reject(request, diag.NO_REASON_GIVEN, self._initiate_error(INITIATE_INCOMPATIBLE_CONFORMANCE))
        pdu = initiate.client_max_receive_pdu_size or 0xFFFF  # 0: the client sets no limit
        if pdu < MIN_CLIENT_PDU_SIZE:
            return self._reject(request, diag.NO_REASON_GIVEN, self._initiate_error(INITIATE_PDU_SIZE_TOO_SHORT))
        self.client = client
        self.conformance = conformance
        self.mechanism = mechanism
        self.application_context_name = wanted_context
        self.client_max_receive_pdu_size = min(pdu, self.server.max_pdu_size)
        self.associated = True
        self.security = security
        self.calling_system_title = request.calling_ap_title
        response = self._initiate_response().to_bytes()
        if security is None:
            self.server.say("server.associated", "client %s (SAP %s) associated on %s", client.name, self.client_sap,
                            self.interface, level=logging.INFO)
            return self._aare(request, acse.AssociationResult.ACCEPTED, acse.ResultSource.ACSE_SERVICE_USER,
                              diag.NULL, response)
        security.set_dedicated_key(initiate.dedicated_key)
        fields = {}
        if mechanism in (5, 6, 7):
            fields = dict(responder_acse_requirements=True, mechanism_name=mechanism,
                          responding_authentication_value=security.new_server_challenge())
            diagnostic = diag.AUTHENTICATION_REQUIRED  # pass 2 of HLS: accepted, authentication to follow
        else:
            diagnostic = diag.NULL
        self.server.say("server.associating", "client %s (SAP %s) associating on %s (mechanism %s)", client.name,
                        self.client_sap, self.interface, mechanism, level=logging.INFO)
        return self._aare(request, acse.AssociationResult.ACCEPTED, acse.ResultSource.ACSE_SERVICE_USER,
                          diagnostic, security.protect_initiate_response(response),
                          responding_ap_title=self.server.system_title, **fields)

    def _initiate_response(self) -> InitiateResponse:
        return InitiateResponse(
            negotiated_quality_of_service=None, negotiated_dlms_version_number=DLMS_VERSION,
            negotiated_conformance=Conformance(self.conformance or int(SERVER_CONFORMANCE)),
            server_max_receive_pdu_size=self.server_max_receive_pdu_size,
        )

    # -- object access ----------------------------------------------------------------------
    def _context(self) -> RequestContext:
        return RequestContext(self.client.name, self.client_sap, self)

    def _rights(self, o: ObjectDef) -> Access | None:
        """What this client may do with `o`; None: the object is invisible to it."""
        return o.access.get(self.client.name)

    def _lookup(self, class_id: int, instance_id: bytes):
        """(ObjectDef, instance) visible to this client, or a CosemAccessError."""
        directory = self.server.directory
        found = directory.by_ln.get(bytes(instance_id))
        if found is None or self._rights(found[0]) is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNDEFINED)
        if found[0].class_id != class_id:
            raise CosemAccessError(DataAccessResult.OBJECT_CLASS_INCONSISTENT)
        return found

    def read(self, descriptor: CosemAttributeDescriptor, selection: SelectiveAccessDescriptor | None) -> Data:
        """One attribute's value, or CosemAccessError: the access rules of the model."""
        o, instance = self._lookup(descriptor.class_id, descriptor.instance_id)
        rights = self._rights(o)
        sel = None if selection is None else Selection(selection.access_selector, selection.access_parameters)
        if sel is not None and not self.conformance & Conformance.SELECTIVE_ACCESS:
            raise CosemAccessError(DataAccessResult.SCOPE_OF_ACCESS_VIOLATED)
        ctx = self._context()
        if descriptor.attribute_id == 0:
            if sel is not None or not self.conformance & Conformance.ATTRIBUTE0_SUPPORTED_WITH_GET:
                raise CosemAccessError(DataAccessResult.SCOPE_OF_ACCESS_VIOLATED)
            return Data.structure(
                instance.get(i, ctx) if i in rights.read else Data.null() for i in instance.attributes
            )
        if descriptor.attribute_id not in instance.attributes:
            raise CosemAccessError(DataAccessResult.OBJECT_UNDEFINED)
        if descriptor.attribute_id not in rights.read:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED)
        return instance.get(descriptor.attribute_id, ctx, sel)

    def write(self, descriptor: CosemAttributeDescriptor, selection: SelectiveAccessDescriptor | None, value: Data) -> None:
        o, instance = self._lookup(descriptor.class_id, descriptor.instance_id)
        if descriptor.attribute_id not in instance.attributes:
            raise CosemAccessError(DataAccessResult.OBJECT_UNDEFINED)
        if descriptor.attribute_id not in self._rights(o).write:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED)
        sel = None if selection is None else Selection(selection.access_selector, selection.access_parameters)
        instance.set(descriptor.attribute_id, value, self._context(), sel)
        self._changed(1, descriptor.class_id, descriptor.instance_id, descriptor.attribute_id)

    def execute(self, descriptor: CosemMethodDescriptor, parameters: Data | None) -> Data | None:
        o, instance = self._lookup(descriptor.class_id, descriptor.instance_id)
        if descriptor.method_id not in instance.methods:
            raise CosemAccessError(DataAccessResult.OBJECT_UNDEFINED)
        if descriptor.method_id not in self._rights(o).execute:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED)
        result = instance.invoke(descriptor.method_id, parameters, self._context())
        self._changed(2, descriptor.class_id, descriptor.instance_id, descriptor.method_id)
        return result

    def _changed(self, service_id: int, class_id: int, logical_name: bytes, index: int) -> None:
        """A client's SET (1) or ACTION (2) succeeded: the configuration event (companion §5.13)."""
        self._event("configuration_changed", service_id=service_id, class_id=class_id,
                    logical_name=bytes(logical_name), index=index)

    def _guarded(self, fn, *args):
        """Run an access; map refusals and internal faults to a result code, never raise."""
        try:
            return fn(*args), DataAccessResult.SUCCESS
        except CosemAccessError as exc:
            return None, exc.result
        except SmartmeterError as exc:
            self.server.say("server.access_failed", "access failed: %s", exc)
            return None, DataAccessResult.OTHER_REASON
        except Exception:  # a fault in one object must not take the association down
            self.server.say("server.object_fault", "internal error while serving client %s\n%s", self.client_sap,
                            traceback.format_exc(), level=logging.ERROR)
            return None, DataAccessResult.HARDWARE_FAULT

    # -- services ---------------------------------------------------------------------------
    def _service(self, request) -> object | None:
        handler = getattr(self, f"_on_{type(request).__name__}", None)
        if handler is None:
            return ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED, None)
        return handler(request)

    # GET
    def _on_GetRequestNormal(self, req: get.GetRequestNormal):
        self._outgoing = None
        value, result = self._guarded(self.read, req.descriptor, req.access_selection)
        if result == DataAccessResult.SUCCESS:
            encoded, result = self._encoded(value)
        if result != DataAccessResult.SUCCESS:
            return get.GetResponseNormal(req.invoke_id_and_priority, result)
        invoke = req.invoke_id_and_priority
        if len(encoded) + 4 <= self._pdu_limit:
            return bytes((get.GET_RESPONSE_TAG, 1, invoke, 0)) + encoded
        if self._service_blocks(Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ):
            return self._start_blocks("get", invoke, _ResponseStream((encoded,)))
        return _ResponseStream((bytes((get.GET_RESPONSE_TAG, 1, invoke, 0)), encoded))

    def _encoded(self, value: Data) -> tuple[bytes, DataAccessResult]:
        try:
            return axdr.encode(value), DataAccessResult.SUCCESS
        except SmartmeterError as exc:  # a value an object produced that A-XDR cannot carry
            self.server.say("server.unencodable", "value cannot be encoded: %s", exc)
            return b"", DataAccessResult.OTHER_REASON

    def _list_results(self, items) -> Iterator[bytes]:
        """The SEQUENCE OF Get-Data-Result of a GET-with-list, one item at a time.

        Each item is read only when the transfer reaches it, so a list naming the whole load
        profile 32 times holds one profile's encoding at a time, not 32; an item equal to the
        one before is answered from that one's encoding without reading it again."""
        yield axdr.encode_length(len(items))
        previous, previous_bytes = None, b""
        for descriptor, selection in items:
            if (descriptor, selection) == previous:
                yield previous_bytes
                continue
            previous, previous_bytes = (descriptor, selection), self._get_data_result(descriptor, selection)
            yield previous_bytes

    def _get_data_result(self, descriptor, selection) -> bytes:
        """Get-Data-Result ::= CHOICE { data [0] Data, data-access-result [1] Data-Access-Result }."""
        value, result = self._guarded(self.read, descriptor, selection)
        if result == DataAccessResult.SUCCESS:
            encoded, result = self._encoded(value)
            if result == DataAccessResult.SUCCESS:
                return b"\x00" + encoded
        return bytes((1, int(result)))

    def _on_GetRequestWithList(self, req: get.GetRequestWithList):
        self._outgoing = None
        if len(req.items) > MAX_LIST_ITEMS:
            return ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON, None)
        invoke = req.invoke_id_and_priority
        head = bytes((get.GET_RESPONSE_TAG, 3, invoke))
        stream = _ResponseStream(self._list_results(req.items))
        whole = stream.complete_within(self._pdu_limit - len(head))
        if whole is not None:
            return head + whole
        if self._service_blocks(Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ):
            # the block-transferred form carries the SEQUENCE OF Get-Data-Result
            return self._start_blocks("get", invoke, stream)
        stream.prepend(head)
        return stream

    def _service_blocks(self, needed: Conformance) -> bool:
        """Whether a long answer goes in service-specific blocks (else whole, for GBT or refusal)."""
        return bool(self.conformance & needed) and not self._answer_in_gbt

    def _start_blocks(self, kind: str, invoke: int, stream: _ResponseStream):
        """Service-specific block transfer of `stream` (the raw-data of the block responses)."""
        self._outgoing = _Outgoing(kind, invoke, stream, self._pdu_limit - BLOCK_HEADER)
        return self._next_block(self._outgoing)

    def _next_block(self, out: _Outgoing):
        chunk, last, number = out.take()
        if last:
            self._outgoing = None
        if out.kind == "get":
            return get.GetResponseWithDataBlock(out.invoke_id_and_priority, last, number, chunk, None)
        return action.ActionResponseWithPblock(out.invoke_id_and_priority, last, number, chunk)

    def _on_GetRequestNext(self, req: get.GetRequestNext):
        out = self._outgoing
        if out is None or out.kind != "get":
            return get.GetResponseWithDataBlock(req.invoke_id_and_priority, True, req.block_number, None,
                                                DataAccessResult.NO_LONG_GET_IN_PROGRESS)
        if req.block_number != out.next_block - 1:
            self._outgoing = None
            return get.GetResponseWithDataBlock(req.invoke_id_and_priority, True, req.block_number, None,
                                                DataAccessResult.DATA_BLOCK_NUMBER_INVALID)
        return self._next_block(out)

    # SET
    def _on_SetRequestNormal(self, req: set_.SetRequestNormal):
        _, result = self._guarded(self.write, req.descriptor, req.access_selection, req.value)
        return set_.SetResponseNormal(req.invoke_id_and_priority, result)

    def _on_SetRequestWithList(self, req: set_.SetRequestWithList):
        if len(req.items) != len(req.values) or len(req.items) > MAX_LIST_ITEMS:
            return ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON, None)
        results = []
        for (descriptor, selection), value in zip(req.items, req.values):
            _, result = self._guarded(self.write, descriptor, selection, value)
            results.append(result)
        return set_.SetResponseWithList(req.invoke_id_and_priority, tuple(results))

    def _on_SetRequestWithFirstDatablock(self, req: set_.SetRequestWithFirstDatablock):
        self._incoming = _Incoming("set", req.invoke_id_and_priority, req)
        return self._set_block(req.last_block, req.block_number, req.raw_data, req.invoke_id_and_priority)

    def _on_SetRequestWithListAndFirstDatablock(self, req: set_.SetRequestWithListAndFirstDatablock):
        self._incoming = _Incoming("set-list", req.invoke_id_and_priority, req)
        return self._set_block(req.last_block, req.block_number, req.raw_data, req.invoke_id_and_priority)

    def _on_SetRequestWithDatablock(self, req: set_.SetRequestWithDatablock):
        if self._incoming is None or not self._incoming.kind.startswith("set"):
            return set_.SetResponseLastDatablock(req.invoke_id_and_priority, DataAccessResult.NO_LONG_SET_IN_PROGRESS,
                                                 req.block_number)
        return self._set_block(req.last_block, req.block_number, req.raw_data, req.invoke_id_and_priority)

    def _accept_block(self, number: int, raw: bytes) -> bool:
        """Add a block to the request being received; False drops a transfer out of order or too long."""
        inc = self._incoming
        if number != inc.next_block or inc.size + len(raw) > MAX_REASSEMBLED:
            self._incoming = None
            return False
        inc.chunks.append(raw)
        inc.size += len(raw)
        inc.next_block += 1
        return True

    def _set_block(self, last: bool, number: int, raw: bytes, invoke: int):
        inc = self._incoming
        if not self._accept_block(number, raw):
            return set_.SetResponseLastDatablock(invoke, DataAccessResult.LONG_SET_ABORTED, number)
        if not last:
            return set_.SetResponseDatablock(invoke, number)
        self._incoming = None
        data = b"".join(inc.chunks)
        first = inc.first
        try:
            if inc.kind == "set":
                value = axdr.decode_all(data)
                _, result = self._guarded(self.write, first.descriptor, first.access_selection, value)
                return set_.SetResponseLastDatablock(invoke, result, number)
            count, offset = axdr.decode_length(data, 0)
            values = []
            for _ in range(count):
                value, offset = axdr.decode(data, offset)
                values.append(value)
            if offset != len(data) or count != len(first.items):
                raise DecodeError("SET list values", offset, "count does not match the attribute list")
        except DecodeError:
            if inc.kind == "set":
                return set_.SetResponseLastDatablock(invoke, DataAccessResult.TYPE_UNMATCHED, number)
            return set_.SetResponseLastDatablockWithList(invoke, tuple(DataAccessResult.TYPE_UNMATCHED for _ in first.items), number)
        results = []
        for (descriptor, selection), value in zip(first.items, values):
            _, result = self._guarded(self.write, descriptor, selection, value)
            results.append(result)
        return set_.SetResponseLastDatablockWithList(invoke, tuple(results), number)

    # ACTION
    def _action_result(self, descriptor, parameters):
        value, result = self._guarded(self.execute, descriptor, parameters)
        return _action_result(result), (value if result == DataAccessResult.SUCCESS else None)

    def _on_ActionRequestNormal(self, req: action.ActionRequestNormal):
        self._outgoing = None
        result, value = self._action_result(req.descriptor, req.parameters)
        encoded = action.ActionResponseNormal(req.invoke_id_and_priority, result, value).to_bytes()
        if len(encoded) <= self._pdu_limit:
            return encoded
        if self._service_blocks(Conformance.BLOCK_TRANSFER_WITH_ACTION):
            # the pblock form carries the encoded response-with-optional-data
            return self._start_blocks("action", req.invoke_id_and_priority, _ResponseStream((encoded[3:],)))
        return _ResponseStream((encoded,))

    def _on_ActionRequestWithList(self, req: action.ActionRequestWithList):
        if len(req.items) > MAX_LIST_ITEMS:
            return ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON, None)
        results = tuple(self._action_result(d, p) for d, p in req.items)
        return action.ActionResponseWithList(req.invoke_id_and_priority, results)

    def _on_ActionRequestNextPblock(self, req: action.ActionRequestNextPblock):
        out = self._outgoing
        if out is None or out.kind != "action" or req.block_number != out.next_block - 1:
            self._outgoing = None
            return action.ActionResponseNormal(req.invoke_id_and_priority, ActionResult.NO_LONG_ACTION_IN_PROGRESS, None)
        return self._next_block(out)

    def _on_ActionRequestWithFirstPblock(self, req: action.ActionRequestWithFirstPblock):
        self._incoming = _Incoming("action", req.invoke_id_and_priority, req)
        return self._action_block(req.last_block, req.block_number, req.raw_data, req.invoke_id_and_priority)

    def _on_ActionRequestWithPblock(self, req: action.ActionRequestWithPblock):
        if self._incoming is None or self._incoming.kind != "action":
            return action.ActionResponseNormal(req.invoke_id_and_priority, ActionResult.NO_LONG_ACTION_IN_PROGRESS, None)
        return self._action_block(req.last_block, req.block_number, req.raw_data, req.invoke_id_and_priority)

    def _action_block(self, last: bool, number: int, raw: bytes, invoke: int):
        inc = self._incoming
        if not self._accept_block(number, raw):
            return action.ActionResponseNormal(invoke, ActionResult.LONG_ACTION_ABORTED, None)
        if not last:
            return action.ActionResponseNextPblock(invoke, number)
        self._incoming = None
        try:
            parameters = axdr.decode_all(b"".join(inc.chunks))
        except DecodeError:
            return action.ActionResponseNormal(invoke, ActionResult.TYPE_UNMATCHED, None)
        result, value = self._action_result(inc.first.descriptor, parameters)
        return action.ActionResponseNormal(invoke, result, value)

    # ACCESS (Green Book 9.3.x): one data item per specification both ways
    def _on_AccessRequest(self, req: access.AccessRequest):
        """Every specification is carried out at once and in order (a GET after a SET sees it);
        what the answer carries is bounded: once the data would pass MAX_ACCESS_RESPONSE, the
        GETs left are not read and answer other-reason (the answer goes in GBT, not produced
        lazily, as a later block must not decide whether a SET happens)."""
        if len(req.specs) != len(req.data) or len(req.specs) > MAX_LIST_ITEMS:
            return ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON, None)
        kinds = access.AccessRequestKind
        data, results, size = [], [], 0

        def carried(value: Data | None, result: DataAccessResult) -> tuple[Data, DataAccessResult]:
            nonlocal size
            if value is None or result != DataAccessResult.SUCCESS:
                return Data.null(), result
            encoded, result = self._encoded(value)
            if result != DataAccessResult.SUCCESS:
                return Data.null(), result
            if size + len(encoded) > MAX_ACCESS_RESPONSE:
                size = MAX_ACCESS_RESPONSE  # full: the GETs after this one are not read at all
                return Data.null(), DataAccessResult.OTHER_REASON
            size += len(encoded)
            return Data(value.type, None, encoded=encoded), result

        for spec, item in zip(req.specs, req.data):
            if spec.kind in (kinds.GET, kinds.GET_WITH_SELECTION):
                if size >= MAX_ACCESS_RESPONSE:
                    value, result = None, DataAccessResult.OTHER_REASON
                else:
                    value, result = self._guarded(self.read, spec.descriptor, spec.access_selection)
                value, result = carried(value, result)
                data.append(value)
                results.append(access.AccessResponseSpec(access.AccessResponseKind.GET, result))
            elif spec.kind in (kinds.SET, kinds.SET_WITH_SELECTION):
                _, result = self._guarded(self.write, spec.descriptor, spec.access_selection, item)
                data.append(Data.null())
                results.append(access.AccessResponseSpec(access.AccessResponseKind.SET, result))
            else:
                parameters = None if item.type == DataType.NULL_DATA else item
                result, value = self._action_result(spec.descriptor, parameters)
                if value is not None:
                    value, fits = carried(value, DataAccessResult.SUCCESS)
                    if fits != DataAccessResult.SUCCESS:
                        result = ActionResult.OTHER_REASON  # done, but its return data is not carried
                data.append(value if value is not None else Data.null())
                results.append(access.AccessResponseSpec(access.AccessResponseKind.ACTION, result))
        # a date-time in the request asks for one in the response (companion standard §3.3.1.1)
        date_time = self.server.clock_bytes() if req.date_time else b""
        return access.AccessResponse(req.long_invoke_id_and_priority, date_time, tuple(data), tuple(results))

    # -- general block transfer ------------------------------------------------------------
    def _start_gbt(self, response: bytes | _ResponseStream, block_number_ack: int) -> bytes:
        """Send a whole answer in general-block-transfer, one block per acknowledgement."""
        stream = response if isinstance(response, _ResponseStream) else _ResponseStream((response,))
        self._gbt_out = _Outgoing("gbt", 0, stream, self.client_max_receive_pdu_size - GBT_HEADER)
        return self._next_gbt(block_number_ack)

    def _next_gbt(self, block_number_ack: int) -> bytes:
        chunk, last, number = self._gbt_out.take()
        if last:
            self._gbt_out = None
        return GeneralBlockTransfer(last, False, 1, number, block_number_ack, chunk).to_bytes()

    def _general_block_transfer(self, apdu: bytes) -> bytes | None:
        """A GBT APDU on the link: a block of a request, or the acknowledgement asking for the
        next block of an answer (window 1: every block is acknowledged)."""
        if not self.associated:
            return _refusal(*NOT_POSSIBLE)
        if len(apdu) > self.server_max_receive_pdu_size + GBT_HEADER:
            # tolerance: a block whose block-data fits the PDU size is taken (gurux-dlms sizes
            # its blocks for a 7-byte header where the length of block-data takes 3 bytes)
            return _refusal(*TOO_LONG)
        if not self.conformance & Conformance.GENERAL_BLOCK_TRANSFER:
            return _refusal(*NOT_SUPPORTED)
        block = GeneralBlockTransfer.from_bytes(apdu)
        if self._gbt_out is not None and not block.block_data and self._gbt_in is None:
            # the client acknowledges a block and asks for the next one
            return self._next_gbt(block.block_number)
        self._gbt_out = None  # a new request ends an answer the client stopped asking for
        inc = self._gbt_in
        if inc is None:
            if block.block_number != 1:
                return _refusal(*NOT_POSSIBLE)
            inc = self._gbt_in = _Incoming("gbt", 0)
        if block.block_number != inc.next_block:
            self._gbt_in = None
            return _refusal(*NOT_POSSIBLE)
        if inc.size + len(block.block_data) > MAX_REASSEMBLED:
            self._gbt_in = None
            return _refusal(*TOO_LONG)
        inc.chunks.append(block.block_data)
        inc.size += len(block.block_data)
        inc.next_block += 1
        if not block.last_block:
            return GeneralBlockTransfer(False, False, 1, 0, block.block_number, b"").to_bytes()
        self._gbt_in = None
        inner = b"".join(inc.chunks)
        inc.chunks.clear()
        self._answer_in_gbt = True  # the whole answer goes in GBT: no service-specific blocks inside
        try:
            response = self._serve(inner, reassembled=True)
        except DecodeError as exc:
            log.debug("malformed APDU in general-block-transfer from client %s: %s", self.client_sap, exc)
            response = _refusal(*MALFORMED)
        finally:
            self._answer_in_gbt = False
        if response is None:
            return None
        # answers to GBT requests go back in GBT (Green Book 9.3.9)
        return self._start_gbt(response, block.block_number)


class _LocalAssociation(ServerAssociation):
    """The meter's own requests (DlmsServer.run_locally): every object is visible and every
    attribute and method may be used; whether a value is taken stays the object's decision."""

    _EVERYTHING = Access(_EVERY_INDEX, _EVERY_INDEX, _EVERY_INDEX)

    def __init__(self, server: DlmsServer, depth: int) -> None:
        super().__init__(server, LOCAL_CLIENT.sap, "local", server.server_sap)
        self.client = LOCAL_CLIENT
        self.associated = True
        self.conformance = int(SERVER_CONFORMANCE)
        self.script_depth = depth

    def _rights(self, o: ObjectDef) -> Access:
        return self._EVERYTHING

    def _changed(self, service_id: int, class_id: int, logical_name: bytes, index: int) -> None:
        pass  # the client's request that started the script is the configuration event

    @property
    def requester_system_title(self) -> bytes:
        """What a script changes is recorded as changed by the meter itself."""
        return self.server.system_title
