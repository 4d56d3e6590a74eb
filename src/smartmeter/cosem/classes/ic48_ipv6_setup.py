"""IC 48 IPv6 setup, version 0 (Blue Book 4.9.7): the LAN/WAN interface's IPv6 addresses.

As IC 42: read-only, the meter does not configure its IP layer. unicast_IPv6_addresses are the
addresses the interface serves on (bound by the runtime, `config["addresses"]`, a Binding giving
an array of octet-string(16)); the others are fixed values. The On Installation and On
Connectivity pushes carry the unicast addresses (companion §10.3/§10.4). The address methods
are not implemented.

    dl_reference = "0-0:25.2.0.255"
    addresses = "network.ipv6_addresses"
"""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, InterfaceClass, RequestContext
from smartmeter.cosem.classes.ic42_ipv4_setup import DEFAULT_DL_REFERENCE
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis

AUTO_CONFIGURATION = 0  # address_config_mode: the addresses come from the network, not from the meter


@REGISTRY.register
class Ipv6Setup(InterfaceClass):
    class_id = 48
    version = 0
    attributes = {
        1: "logical_name", 2: "dl_reference", 3: "address_config_mode", 4: "unicast_ipv6_addresses",
        5: "multicast_ipv6_addresses", 6: "gateway_ipv6_addresses", 7: "primary_dns_address",
        8: "secondary_dns_address", 9: "traffic_class", 10: "neighbor_discovery_setup",
    }

    def get_dl_reference(self, ctx: RequestContext) -> Data:
        return Data.octet_string(Obis.parse(self.config.get("dl_reference", DEFAULT_DL_REFERENCE)).to_bytes())

    def get_address_config_mode(self, ctx: RequestContext) -> Data:
        return Data.enum(AUTO_CONFIGURATION)

    def get_unicast_ipv6_addresses(self, ctx: RequestContext) -> Data:
        return self.binding("addresses").get()

    def get_multicast_ipv6_addresses(self, ctx: RequestContext) -> Data:
        return Data.array([])

    def get_gateway_ipv6_addresses(self, ctx: RequestContext) -> Data:
        return Data.array([])

    def get_primary_dns_address(self, ctx: RequestContext) -> Data:
        return Data.octet_string(bytes(16))

    def get_secondary_dns_address(self, ctx: RequestContext) -> Data:
        return Data.octet_string(bytes(16))

    def get_traffic_class(self, ctx: RequestContext) -> Data:
        return Data.unsigned(0)

    def get_neighbor_discovery_setup(self, ctx: RequestContext) -> Data:
        return Data.array([])
