"""IC 41 TCP-UDP setup: the LAN/WAN wrapper port's transport parameters (Blue Book 4.9.1).

nb_of_sim_conn and inactivity_time_out bound what peers can make the wrapper port hold; a
write takes effect at once (the transport asks at every new connection and every second) and
persists in the meter's settings store. The port is the one the meter listens on; MSS and
IP_reference describe the IP layer below, which the meter does not configure.
"""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, InterfaceClass, store_integer_setting
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis

DEFAULT_PORT = 4059  # IANA DLMS/COSEM port
DEFAULT_IP_REFERENCE = "0-0:25.1.0.255"  # IPv4 setup (IC 42), as IDIS names it
# attribute name -> (DataType, default); defaults as utilities configure IP meters
TCP_UDP_SETUP_DEFAULTS = {
    "tcp_udp_port": (DataType.LONG_UNSIGNED, DEFAULT_PORT),
    "ip_reference": (DataType.OCTET_STRING, DEFAULT_IP_REFERENCE),
    "mss": (DataType.LONG_UNSIGNED, 576),  # the IPv4 minimum datagram size (Blue Book default)
    "nb_of_sim_conn": (DataType.UNSIGNED, 16),
    "inactivity_time_out": (DataType.LONG_UNSIGNED, 180),  # s; 0 = no inactivity supervision
}
# what a write may set; the other attributes follow the command line and the IP layer
TCP_UDP_SETUP_WRITABLE = {"nb_of_sim_conn": (1, 255), "inactivity_time_out": (0, 65535)}


@REGISTRY.register
class TcpUdpSetup(InterfaceClass):
    class_id = 41
    version = 0
    attributes = {1: "logical_name", **{i: name for i, name in enumerate(TCP_UDP_SETUP_DEFAULTS, start=2)}}

    # the port the wrapper actually listens on, set by the transport that serves it
    serving_port: int | None = None

    @property
    def _store(self):
        """Where written values persist (the meter's store), if bound."""
        return self.bindings.get("settings")

    def parameter(self, name: str) -> int:
        """nb_of_sim_conn, inactivity_time_out, mss or tcp_udp_port as the transport uses it."""
        if name == "tcp_udp_port" and self.serving_port is not None:
            return self.serving_port
        default = int(self.config.get(name, TCP_UDP_SETUP_DEFAULTS[name][1]))
        if name in TCP_UDP_SETUP_WRITABLE and self._store is not None:
            return int(self._store.get(f"tcp_udp.{self.logical_name}.{name}", default))
        return default

    def limits(self) -> tuple[int, float]:
        """(maximum simultaneous connections, inactivity timeout in seconds, 0 = none)."""
        return self.parameter("nb_of_sim_conn"), float(self.parameter("inactivity_time_out"))

    def get_ip_reference(self, ctx) -> Data:
        reference = self.config.get("ip_reference", DEFAULT_IP_REFERENCE)
        return Data.octet_string(Obis.parse(reference).to_bytes())

    def _set(self, name: str, value: Data) -> None:
        store_integer_setting(self._store, f"tcp_udp.{self.logical_name}.{name}", value,
                              TCP_UDP_SETUP_DEFAULTS[name][0], TCP_UDP_SETUP_WRITABLE[name], name, "TCP-UDP setup")

    def __getattr__(self, attr: str):
        # get_<attribute> for the integer attributes, set_<attribute> for the writable ones
        name = attr[4:]
        if attr.startswith("get_") and name in TCP_UDP_SETUP_DEFAULTS and name != "ip_reference":
            return lambda ctx: Data(TCP_UDP_SETUP_DEFAULTS[name][0], self.parameter(name))
        if attr.startswith("set_") and name in TCP_UDP_SETUP_WRITABLE:
            return lambda value, ctx: self._set(name, value)
        raise AttributeError(attr)
