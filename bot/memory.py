"""Keep the cyclic garbage collector off what lives as long as the process.

A full collection walks every tracked object. A running Strata holds hundreds of thousands that never die:
ccxt's markets (thousands per venue, nested dicts), the engine's strategies and caches. bench/engine.py measured
full collections at 1.5 s of a 4.9 s round of 10,000 strategies. `gc.freeze()` moves everything alive at that
moment out of the collector's sight (frozen objects are still freed by reference counting when dropped), so a
process freezes right after it loaded its long-lived data: at engine start-up and after a venue's markets load.

Only processes that run for long opt in (`enable()`: `python -m bot run|front|worker`, the benchmarks); the
test suite, which starts and drops thousands of engines in one process, never freezes anything.
"""

from __future__ import annotations

import gc

_enabled = False


def enable() -> None:
    global _enabled
    _enabled = True


def freeze_long_lived() -> None:
    """Move every object alive now out of the collector's sight (see the module docstring); O(1)."""
    if _enabled:
        gc.freeze()
