"""TEST HOOK: kill the process at a named point of the order path, to prove crash safety in a real process.

`crash_point("after_intent")` does nothing unless the environment variable `STRATA_CRASH_AT` names that point;
then the process sends itself SIGKILL on the spot — no cleanup, no flush, exactly like a power cut. Only the
crash-safety tests set the variable. Points: `after_intent` (intent committed, order not sent),
`after_send` (exchange accepted the order, nothing recorded yet), `after_fill` (fill and alert committed).
"""

from __future__ import annotations

import os
import signal

ENV = "STRATA_CRASH_AT"
POINTS = frozenset({"after_intent", "after_send", "after_fill"})


def crash_point(name: str) -> None:
    """Die by SIGKILL here if `STRATA_CRASH_AT` names this point (a test hook; a no-op otherwise)."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
