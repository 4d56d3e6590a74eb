"""The `smartmeter` command line."""
from smartmeter.errors import SmartmeterError


class UsageProblem(SmartmeterError):
    """A problem the user can fix; carries the hint shown after the message."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.hint = hint
        super().__init__(message)
