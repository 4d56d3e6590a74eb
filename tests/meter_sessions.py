"""A client's association with an in-process meter (`Meter.server`), driven APDU by APDU: the real
server path (association, the client's protection, its access rights, the interface classes)
without a socket. Each client associates as its demo credentials say (HLS 6 clients on the
optical port "wz", the others on "lan")."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, CosemMethodDescriptor, SelectiveAccessDescriptor
from smartmeter.dlms.client import (
    AccessDenied, ActionExchange, ClientAssociation, CounterStore, Exchange, GetExchange, SetExchange,
)
from smartmeter.hes.credentials import load_credentials

SUCCESS = 0


class ClientSession:
    def __init__(self, meter, client: str) -> None:
        credentials = load_credentials(Path(meter.config.data_dir) / "credentials" / f"{client}.json")
        security = dataclasses.replace(credentials.security, invocation_counter=CounterStore())
        mechanism = meter.model.clients[client].mechanism
        self.server = meter.server.association(credentials.client_sap, "wz" if mechanism == 6 else "lan")
        self.association = ClientAssociation(security=security)
        self.association.on_aare(self.server.handle(self.association.aarq()))
        if self.association.needs_hls:
            self._drive(self.association.hls_exchange())

    def _drive(self, exchange: Exchange):
        request = exchange.first()
        while request is not None:
            request = exchange.feed(self.server.handle(request))
        return exchange.result

    def _outcome(self, exchange: Exchange) -> tuple[int, object]:
        """(0, the result) or (the refusing data-access-result / action-result, None)."""
        try:
            return SUCCESS, self._drive(self.association.secure(exchange))
        except AccessDenied as denied:
            return int(denied.result), None

    def get(self, class_id: int, obis: str, attribute: int,
            selection: SelectiveAccessDescriptor | None = None) -> tuple[int, Data | None]:
        return self._outcome(GetExchange(CosemAttributeDescriptor(class_id, Obis.parse(obis).to_bytes(), attribute),
                                         selection))

    def set(self, class_id: int, obis: str, attribute: int, value: Data) -> int:
        pdu = self.association.negotiated.server_max_receive_pdu_size - self.association.protection_overhead
        descriptor = CosemAttributeDescriptor(class_id, Obis.parse(obis).to_bytes(), attribute)
        return self._outcome(SetExchange(descriptor, value, pdu))[0]

    def action(self, class_id: int, obis: str, method: int, parameters: Data | None) -> int:
        return self._outcome(ActionExchange(CosemMethodDescriptor(class_id, Obis.parse(obis).to_bytes(), method),
                                            parameters))[0]

    def close(self) -> None:
        self.server.handle(self.association.release_request())
