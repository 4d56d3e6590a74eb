"""IC 64 Security setup, version 1 (Blue Book 4.4.7): one client's security context.

The behaviour (keys, certificates, key pairs) lives in the bound security service
(`bindings["security"]`); this class maps attributes and methods onto it. The object
0-0:43.0.0.255 ("Current security setup") resolves to the context of the client asking.
"""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, InterfaceClass, RequestContext, expect
from smartmeter.cosem.data import Data, DataType


@REGISTRY.register
class SecuritySetup(InterfaceClass):
    class_id = 64
    version = 1
    attributes = {
        1: "logical_name", 2: "security_policy", 3: "security_suite", 4: "client_system_title",
        5: "server_system_title", 6: "certificates",
    }
    methods = {
        1: "security_activate", 2: "key_transfer", 3: "key_agreement", 4: "generate_key_pair",
        5: "generate_certificate_request", 6: "import_certificate", 7: "export_certificate", 8: "remove_certificate",
    }

    @property
    def service(self):
        return self.bindings["security"]

    def client(self, ctx: RequestContext) -> str:
        name = self.config["client"]
        return ctx.client_name if name == "current" else name

    def get_security_policy(self, ctx: RequestContext) -> Data:
        return Data.enum(self.service.policy(self.client(ctx)))

    def set_security_policy(self, value: Data, ctx: RequestContext) -> None:
        self.service.set_policy(self.client(ctx), expect(value, DataType.ENUM), ctx)

    def get_security_suite(self, ctx: RequestContext) -> Data:
        return Data.enum(self.service.suite(self.client(ctx)))

    def get_client_system_title(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self.service.client_system_title(self.client(ctx)) or b"")

    def get_server_system_title(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self.service.server_system_title)

    def get_certificates(self, ctx: RequestContext) -> Data:
        return self.service.certificates_data(self.client(ctx))

    def do_security_activate(self, parameters: Data | None, ctx: RequestContext) -> None:
        self.service.set_policy(self.client(ctx), expect(parameters or Data.null(), DataType.ENUM), ctx)

    def do_key_transfer(self, parameters: Data | None, ctx: RequestContext) -> None:
        self.service.key_transfer(self.client(ctx), parameters or Data.null(), ctx)

    def do_key_agreement(self, parameters: Data | None, ctx: RequestContext) -> Data:
        return self.service.key_agreement(self.client(ctx), parameters or Data.null(), ctx)

    def do_generate_key_pair(self, parameters: Data | None, ctx: RequestContext) -> None:
        self.service.generate_key_pair(expect(parameters or Data.null(), DataType.ENUM), ctx)

    def do_generate_certificate_request(self, parameters: Data | None, ctx: RequestContext) -> Data:
        return Data.octet_string(
            self.service.generate_certificate_request(expect(parameters or Data.null(), DataType.ENUM), ctx))

    def do_import_certificate(self, parameters: Data | None, ctx: RequestContext) -> None:
        self.service.import_certificate(self.client(ctx), expect(parameters or Data.null(), DataType.OCTET_STRING), ctx)

    def do_export_certificate(self, parameters: Data | None, ctx: RequestContext) -> Data:
        return Data.octet_string(self.service.export_certificate(self.client(ctx), parameters or Data.null()))

    def do_remove_certificate(self, parameters: Data | None, ctx: RequestContext) -> None:
        self.service.remove_certificate(self.client(ctx), parameters or Data.null(), ctx)
