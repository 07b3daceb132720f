"""The one error type services raise for the user: its message is fit to show as it is."""


class UserError(Exception):
    """A refusal or failure explained in plain words; never carries a secret."""

    def __init__(self, message: str, *, step: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Why, in a few words of our own for the audit log ("the key can withdraw"); never the user's text.
        self.reason = reason
        #: The allocation step whose answer can fix the refusal ("symbol", "budget", "params"), when one can:
        #: the guided /allocate sends the user back there instead of leaving them stuck.
        self.step = step
