"""smartmeter: a DLMS/COSEM electricity meter and its head-end."""

__version__ = "0.1.0"
