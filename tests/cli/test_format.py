"""How values look to a person: logical names by the class/attribute schema, not by their bytes."""
from __future__ import annotations

from smartmeter.cli.format import logical_name_paths, to_json, to_text
from smartmeter.cosem.data import Data

CLOCK_LN = bytes([0, 0, 1, 0, 0, 255])
SAP_LN = bytes([0, 0, 41, 0, 0, 255])
SIX_BYTES = bytes([0x00, 0x1A, 0x2B, 0x3C, 0x4D, 0xFF])  # e.g. a MAC address: not a logical name


def capture_object(class_id: int, ln: bytes) -> Data:
    return Data.structure([Data.long_unsigned(class_id), Data.octet_string(ln), Data.integer(2),
                           Data.long_unsigned(0)])


def test_capture_objects_show_obis_codes_and_json_keeps_hex():
    value = Data.array([capture_object(8, CLOCK_LN), capture_object(1, SAP_LN)])
    assert to_text(value, logical_name_paths(7, 3)) == "[{8, 0-0:1.0.0.255, 2, 0}, {1, 0-0:41.0.0.255, 2, 0}]"
    assert to_json(value) == [[8, "0000010000ff", 2, 0], [1, "0000290000ff", 2, 0]]


def test_six_bytes_outside_a_logical_name_position_stay_hex():
    value = Data.array([Data.structure([Data.long_unsigned(1), Data.octet_string(SIX_BYTES), Data.integer(2),
                                        Data.long_unsigned(0)])])
    assert to_text(value, logical_name_paths(7, 2)) == "[{1, 001a2b3c4dff, 2, 0}]"  # the buffer: no names
    assert to_text(Data.octet_string(SIX_BYTES), logical_name_paths(1, 2)) == "001a2b3c4dff"
    assert to_text(Data.octet_string(SIX_BYTES), logical_name_paths(1, 1)) == "0-26:43.60.77.255"


def test_object_list_and_attribute_0_of_an_association():
    rights = Data.structure([Data.array([]), Data.array([])])
    entry = Data.structure([Data.long_unsigned(17), Data.unsigned(0), Data.octet_string(SAP_LN), rights])
    other_six = Data.octet_string(SIX_BYTES)
    assert to_text(Data.array([entry]), logical_name_paths(15, 2)) == "[{17, 0, 0-0:41.0.0.255, {[], []}}]"
    whole = Data.structure([Data.octet_string(bytes([0, 0, 40, 0, 0, 255])), Data.array([entry]), other_six])
    assert to_text(whole, logical_name_paths(15, 0, 3)) == \
        "{0-0:40.0.0.255, [{17, 0, 0-0:41.0.0.255, {[], []}}], 001a2b3c4dff}"


def test_a_logical_name_position_holding_something_else_is_shown_as_it_is():
    wrong_length = Data.array([capture_object(8, b"\x00\x00\x01")])
    assert to_text(wrong_length, logical_name_paths(7, 3)) == "[{8, 000001, 2, 0}]"
    not_a_string = Data.array([Data.structure([Data.long_unsigned(8), Data.long_unsigned(7)])])
    assert to_text(not_a_string, logical_name_paths(7, 3)) == "[{8, 7}]"
