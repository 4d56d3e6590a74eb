"""Wired M-Bus (EN 13757-2 link layer, EN 13757-3 application layer) and a bus master.

`link` frames and reassembles the bytes on the bus, `application` decodes and encodes the
telegrams they carry, `master` is the sans-io state machine that reads slaves, `aio`
drives it over TCP or a serial port.
"""
