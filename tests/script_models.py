"""A small object model for script and schedule tests: one client "tester", a status object the
scripts write, and a script table 0-0:10.0.109.255 whose script i writes the value i into it."""
from __future__ import annotations


def script_test_model(*schedules: dict) -> dict:
    """The model document with these IC 22 entries after the status object and the script table."""
    return {
        "profile": {"name": "test"},
        "clients": {"tester": {"sap": 16, "interfaces": ["lan"], "mechanism": 0}},
        "object": [
            {"name": "Status", "class_id": 1, "obis": "0-0:96.5.3.255", "value": "status",
             "access": {"tester": {"read": "*"}}},
            {"name": "Script table", "class_id": 9, "obis": "0-0:10.0.109.255", "access": {"tester": {"read": "*"}},
             "scripts": [{"id": i, "actions": [{"service": "write", "class_id": 1, "obis": "0-0:96.5.3.255",
                                                "index": 2, "parameter": {"type": "unsigned", "value": i}}]}
                         for i in (1, 2)]},
            *schedules,
        ],
    }
