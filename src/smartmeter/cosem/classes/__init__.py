"""One module per COSEM interface class; importing them registers them in REGISTRY."""


def load_all() -> None:
    from smartmeter.cosem.classes import (  # noqa: F401
        ic1_data, ic3_register, ic4_extended_register, ic5_demand_register, ic7_profile_generic, ic8_clock, ic15_association_ln,
        ic17_sap_assignment, ic23_iec_hdlc_setup, ic64_security_setup, ic12544_frame_counter,
        ic41_tcp_udp_setup,
    )
