"""IC 15 Association LN, version 3 (Blue Book 4.4.3): describes the current association.

The object list holds only what the associated client may see, with its access rights as
the model grants them (bit-mapped access_mode of version 3: bit 0 read / access,
bit 1 write; the security bits 2..7 stay 0 until protected contexts exist).
"""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, InterfaceClass, RequestContext
from smartmeter.cosem.data import Data, DataType

# Application context / mechanism OIDs 2.16.756.5.8.{1|2}.x as Association LN encodes them.
def _context_name(kind: int, last: int) -> Data:
    return Data.structure([
        Data.unsigned(2), Data.unsigned(16), Data.long_unsigned(756), Data.unsigned(5),
        Data.unsigned(8), Data.unsigned(kind), Data.unsigned(last),
    ])


def access_rights(ic: type[InterfaceClass], read: frozenset[int], write: frozenset[int], execute: frozenset[int]) -> Data:
    attributes = []
    for index in ic.attributes:
        mode = (1 if index in read else 0) | (2 if index in write else 0)
        selectors = ic.selective_access.get(index)
        attributes.append(Data.structure([
            Data.integer(index), Data.enum(mode),
            Data.array(Data.integer(s) for s in selectors) if selectors else Data.null(),
        ]))
    methods = [Data.structure([Data.integer(m), Data.enum(1 if m in execute else 0)]) for m in ic.methods]
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

    def get_object_list(self, ctx: RequestContext) -> Data:
        directory = self.bindings["directory"]
        items = []
        for o, inst in directory.visible_to(ctx.client_name):
            a = o.access_for(ctx.client_name)
            items.append(Data.structure([
                Data.long_unsigned(o.class_id), Data.unsigned(o.version), Data.octet_string(o.obis.to_bytes()),
                access_rights(type(inst), a.read, a.write, a.execute),
            ]))
        return Data.array(items)

    def get_associated_partners_id(self, ctx: RequestContext) -> Data:
        return Data.structure([Data.integer(ctx.client_sap), Data.long_unsigned(ctx.association.server_sap)])

    def get_application_context_name(self, ctx: RequestContext) -> Data:
        return _context_name(1, ctx.association.application_context_name)

    def get_xdlms_context_info(self, ctx: RequestContext) -> Data:
        a = ctx.association
        return Data.structure([
            Data(DataType.BIT_STRING, format(a.conformance, "024b")),
            Data.long_unsigned(a.server_max_receive_pdu_size),
            Data.long_unsigned(a.client_max_receive_pdu_size),  # what the server may send
            Data.unsigned(6),
            Data.integer(0),
            Data.octet_string(b""),
        ])

    def get_authentication_mechanism_name(self, ctx: RequestContext) -> Data:
        return _context_name(2, ctx.association.mechanism)

    def get_secret(self, ctx: RequestContext) -> Data:
        return Data.octet_string(b"")  # never disclosed; access rights deny it anyway

    def get_association_status(self, ctx: RequestContext) -> Data:
        return Data.enum(2)  # associated: this object is only reachable inside an association

    def get_security_setup_reference(self, ctx: RequestContext) -> Data:
        return Data.octet_string(bytes(6))

    def get_user_list(self, ctx: RequestContext) -> Data:
        return Data.array([])

    def get_current_user(self, ctx: RequestContext) -> Data:
        return Data.structure([Data.unsigned(0), Data.visible_string("")])
