"""A value that must never be printed: API keys, API secrets, the bot token, the master key.

`repr`, `str` and `format` all show asterisks; the value is reached only through `reveal()`, which
only the exchange-client binding and the vault call.
"""

from __future__ import annotations


class Secret:
    """Wrap a sensitive string so that logging, tracebacks and debuggers see `'**********'`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the plain value; call it only where the value is actually used."""
        return self._value

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __format__(self, format_spec: str) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):
        raise TypeError("Secret values cannot be pickled or persisted")


class Credentials:
    """An exchange API key pair; both halves stay `Secret` until the exchange client signs a request."""

    __slots__ = ("api_key", "secret")

    def __init__(self, api_key: Secret | str, secret: Secret | str) -> None:
        self.api_key = Secret(api_key)
        self.secret = Secret(secret)

    def __repr__(self) -> str:
        return "Credentials(api_key='**********', secret='**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Credentials) and (self.api_key, self.secret) == (other.api_key, other.secret)

    def __hash__(self) -> int:
        return hash((self.api_key, self.secret))

    def __reduce__(self):
        raise TypeError("Credentials cannot be pickled or persisted")
