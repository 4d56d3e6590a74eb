"""IC 15 Association LN, version 3 (Blue Book 4.4.3): describes the current association.

The object list holds only what the associated client may see, with its access rights as
the model grants them (bit-mapped access_mode of version 3: bit 0 read / access,
bit 1 write; the security bits 2..7 stay 0 until protected contexts exist).
"""
from __future__ import annotations

from smartmeter.cosem.classes.base import (
    REGISTRY, CosemAccessError, DataAccessResult, InterfaceClass, RequestContext, expect,
)
from smartmeter.cosem.data import Data, DataType

# Application context / mechanism OIDs 2.16.756.5.8.{1|2}.x as Association LN encodes them.
def _context_name(kind: int, last: int) -> Data:
    return Data.structure([
        Data.unsigned(2), Data.unsigned(16), Data.long_unsigned(756), Data.unsigned(5),
        Data.unsigned(8), Data.unsigned(kind), Data.unsigned(last),
    ])


def access_rights(ic: type[InterfaceClass], read: frozenset[int], write: frozenset[int], execute: frozenset[int],
                  protection: int = 0) -> Data:
    """Version 3 access modes: bit 0 read (or access), bit 1 write, bits 2..7 the protection
    the access needs (the client's security policy bits, the same positions as IC 64's)."""
    attributes = []
    for index in ic.attributes:
        mode = (1 if index in read else 0) | (2 if index in write else 0)
        if mode:
            mode |= protection
        selectors = ic.selective_access.get(index)
        attributes.append(Data.structure([
            Data.integer(index), Data.enum(mode),
            Data.array(Data.integer(s) for s in selectors) if selectors else Data.null(),
        ]))
    methods = [Data.structure([Data.integer(m), Data.enum((1 | protection) if m in execute else 0)])
               for m in ic.methods]
    return Data.structure([Data.array(attributes), Data.array(methods)])


@REGISTRY.register
class AssociationLN(InterfaceClass):
    class_id = 15
    version = 3
    attributes = {
        1: "logical_name", 2: "object_list", 3: "associated_partners_id", 4: "application_context_name",
        5: "xdlms_context_info", 6: "authentication_mechanism_name", 7: "secret", 8: "association_status",
        9: "security_setup_reference", 10: "user_list", 11: "current_user",
    }
    methods = {1: "reply_to_hls_authentication", 2: "change_hls_secret", 3: "add_object", 4: "remove_object",
               5: "add_user", 6: "remove_user"}

    @property
    def described_client(self) -> str | None:
        """The client this object describes; None for the current association (0-0:40.0.0.255)."""
        return self.config.get("client")

    def _client_name(self, ctx: RequestContext) -> str:
        return self.described_client or ctx.client_name

    def _client(self, ctx: RequestContext):
        return self.bindings["model"].clients[self._client_name(ctx)]

    def _is_current(self, ctx: RequestContext) -> bool:
        return self.described_client is None or self.described_client == ctx.client_name

    def get_object_list(self, ctx: RequestContext) -> Data:
        directory = self.bindings["directory"]
        name = self._client_name(ctx)
        protection = self.bindings["model"].clients[name].security_policy
        items = []
        for o, inst in directory.visible_to(name):
            a = o.access_for(name)
            items.append(Data.structure([
                Data.long_unsigned(o.class_id), Data.unsigned(o.version), Data.octet_string(o.obis.to_bytes()),
                access_rights(type(inst), a.read, a.write, a.execute, protection),
            ]))
        return Data.array(items)

    def get_associated_partners_id(self, ctx: RequestContext) -> Data:
        return Data.structure([Data.integer(self._client(ctx).sap), Data.long_unsigned(1)])

    def get_application_context_name(self, ctx: RequestContext) -> Data:
        return _context_name(1, 3 if self._client(ctx).ciphered else 1)

    def get_xdlms_context_info(self, ctx: RequestContext) -> Data:
        a = ctx.association
        if self._is_current(ctx):
            conformance, receive, send = a.conformance, a.server_max_receive_pdu_size, a.client_max_receive_pdu_size
        else:  # what this server offers any client
            conformance, receive, send = a.server_conformance, a.server_max_receive_pdu_size, a.server_max_receive_pdu_size
        return Data.structure([
            Data(DataType.BIT_STRING, format(conformance, "024b")),
            Data.long_unsigned(receive),
            Data.long_unsigned(send),  # what the server may send
            Data.unsigned(6),
            Data.integer(0),
            Data.octet_string(b""),
        ])

    def get_authentication_mechanism_name(self, ctx: RequestContext) -> Data:
        return _context_name(2, self._client(ctx).mechanism)

    def get_secret(self, ctx: RequestContext) -> Data:
        return Data.octet_string(b"")  # never disclosed; access rights deny it anyway

    def get_association_status(self, ctx: RequestContext) -> Data:
        if self._is_current(ctx):
            return Data.enum(2 if ctx.association.authenticated else 1)  # associated / association-pending
        return Data.enum(0)  # another client's association object: not the one in use here

    def get_security_setup_reference(self, ctx: RequestContext) -> Data:
        setup = self.bindings["security_setups"].get(self._client_name(ctx))
        return Data.octet_string(setup.to_bytes() if setup is not None else bytes(6))

    def do_reply_to_hls_authentication(self, parameters: Data | None, ctx: RequestContext) -> Data:
        if not self._is_current(ctx):
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, "only on the current association")
        f_stoc = expect(parameters or Data.null(), DataType.OCTET_STRING)
        return Data.octet_string(ctx.association.reply_to_hls(f_stoc))

    def do_change_hls_secret(self, parameters: Data | None, ctx: RequestContext) -> None:
        """§3.6: the new HLS secret (16..32 bytes) arrives key-wrapped with the master key."""
        wrapped = expect(parameters or Data.null(), DataType.OCTET_STRING)
        security = getattr(ctx.association, "security", None)
        self.bindings["security"].change_hls_secret(self._client_name(ctx), wrapped,
                                                    getattr(security, "authority_token", "") or "")

    def get_user_list(self, ctx: RequestContext) -> Data:
        return Data.array([])

    def get_current_user(self, ctx: RequestContext) -> Data:
        return Data.structure([Data.unsigned(0), Data.visible_string("")])
