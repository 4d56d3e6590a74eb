"""IC 42 IPv4 setup, version 0 (Blue Book 4.9.3): the LAN/WAN interface's IPv4 address.

The meter does not configure its IP layer (the host's network does), so every attribute is
read-only: IP_address is the address the interface serves on (bound by the runtime,
`config["address"]`, a Binding giving double-long-unsigned, 0 = none), the others are the
model's fixed values. The On Installation and On Connectivity pushes carry IP_address
(companion §10.3/§10.4). The multicast methods are not implemented.

    dl_reference = "0-0:25.2.0.255"
    address = "network.ipv4_address"
"""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, InterfaceClass, RequestContext
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis

DEFAULT_DL_REFERENCE = "0-0:25.2.0.255"  # Ethernet setup, the data link layer below IPv4 (not modelled)


@REGISTRY.register
class Ipv4Setup(InterfaceClass):
    class_id = 42
    version = 0
    attributes = {
        1: "logical_name", 2: "dl_reference", 3: "ip_address", 4: "multicast_ip_address", 5: "ip_options",
        6: "subnet_mask", 7: "gateway_ip_address", 8: "use_dhcp_flag", 9: "primary_dns_address",
        10: "secondary_dns_address",
    }

    def get_dl_reference(self, ctx: RequestContext) -> Data:
        return Data.octet_string(Obis.parse(self.config.get("dl_reference", DEFAULT_DL_REFERENCE)).to_bytes())

    def get_ip_address(self, ctx: RequestContext) -> Data:
        return self.binding("address").get()

    def get_multicast_ip_address(self, ctx: RequestContext) -> Data:
        return Data.array([])

    def get_ip_options(self, ctx: RequestContext) -> Data:
        return Data.array([])

    def get_subnet_mask(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(0)

    def get_gateway_ip_address(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(0)

    def get_use_dhcp_flag(self, ctx: RequestContext) -> Data:
        return Data.boolean(False)

    def get_primary_dns_address(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(0)

    def get_secondary_dns_address(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(0)
