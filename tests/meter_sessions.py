"""A client's association with an in-process meter (`Meter.server`), driven APDU by APDU: the real
server path (association, the client's protection, its access rights, the interface classes)
without a socket. Each client associates as its demo credentials say (HLS 6 clients on the
optical port "wz", the others on "lan"). `Sessions` keeps each client's invocation counters over
its associations with one meter (the meter refuses a counter it has seen) and one association at a
time on the optical port (as the port has it)."""
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


def interface_of(meter, client: str) -> str:
    return "wz" if meter.model.clients[client].mechanism == 6 else "lan"


class ClientSession:
    def __init__(self, meter, client: str, counters: CounterStore | None = None) -> None:
        credentials = load_credentials(Path(meter.config.data_dir) / "credentials" / f"{client}.json")
        security = dataclasses.replace(credentials.security, invocation_counter=counters or CounterStore())
        self.interface = interface_of(meter, client)
        self.server = meter.server.association(credentials.client_sap, self.interface)
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


class Sessions:
    """The association of each client with one meter, opened on first use."""

    def __init__(self, meter) -> None:
        self.meter = meter
        self._open: dict[str, ClientSession] = {}
        self._counters: dict[str, CounterStore] = {}

    def __call__(self, client: str) -> ClientSession:
        if client not in self._open:
            if interface_of(self.meter, client) == "wz":
                self._release_wz()
            self._open[client] = ClientSession(self.meter, client, self._counters.setdefault(client, CounterStore()))
        return self._open[client]

    def _release_wz(self) -> None:
        for name, session in list(self._open.items()):
            if session.interface == "wz":
                session.close()
                del self._open[name]
