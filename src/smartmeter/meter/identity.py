"""Meter identification (companion standard §5.1): logical device name and system title
derived from the FLAG manufacturer code, the meter type and the serial number."""
from __future__ import annotations

import re
from dataclasses import dataclass

from smartmeter.errors import SmartmeterError

METER_TYPES = {100: "single phase", 200: "poly phase, direct connected", 300: "poly phase, CT connected"}
SERIAL_FORM = re.compile(r"^[0-9A-Z]([A-Z]{3})[0-9A-Z]*([0-9]{10})$")


class IdentityError(SmartmeterError):
    pass


@dataclass(frozen=True)
class MeterIdentity:
    serial: str  # DIN 43863-5 server ID, e.g. 1KFM0100000001
    meter_type: int = 100
    comms_module_serial: str = ""

    def __post_init__(self) -> None:
        if self.meter_type not in METER_TYPES:
            raise IdentityError(f"meter type must be one of {sorted(METER_TYPES)}")
        if not SERIAL_FORM.match(self.serial):
            raise IdentityError(
                f"serial {self.serial!r} is not a DIN 43863-5 ID like 1KFM0100000001 "
                "(digit, 3-letter FLAG code, …, 10 digits)"
            )

    @property
    def flag(self) -> str:
        return SERIAL_FORM.match(self.serial).group(1)

    @property
    def serial_digits(self) -> str:
        return SERIAL_FORM.match(self.serial).group(2)

    @property
    def logical_device_name(self) -> bytes:
        return f"{self.flag}{self.meter_type:03d}{self.serial_digits}".encode("ascii")

    @property
    def system_title(self) -> bytes:
        return self.flag.encode("ascii") + int(self.serial_digits).to_bytes(5, "big")
