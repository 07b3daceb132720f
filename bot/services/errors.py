"""The one error type services raise for the user: its message is fit to show as it is."""


class UserError(Exception):
    """A refusal or failure explained in plain words; never carries a secret."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
