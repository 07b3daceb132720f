"""Keep the process's memory out of core dumps and away from same-user debuggers.

A running bot holds the master key and, while an order is sent, decrypted API secrets in memory. A core
file (a crash, or `kill -QUIT`) would write them to disk, where backups and crash reporters pick them up.

Two switches, both set once at start-up by `run`, `demo` and `rotate-master-key`:

- `RLIMIT_CORE` 0 (soft and hard, so nothing in the process can raise it again): the kernel writes no core
  file. On its own it is not enough: with a piped `core_pattern` (systemd-coredump, apport) the kernel hands
  the dump to the helper whatever the limit, and the helper decides.
- Linux `prctl(PR_SET_DUMPABLE, 0)`: no core dump of any kind, and processes of the same user can no longer
  `ptrace` the bot or read its `/proc/<pid>/mem` and `/proc/<pid>/environ` (which may hold
  `STRATA_MASTER_KEY`); only root (CAP_SYS_PTRACE) can. The cost is that an operator debugging the bot with
  py-spy or gdb must do so as root. We judge that a fair price for a process whose memory holds every key.
  The flag is reset by `execve` and the bot starts no programs, so nothing else is affected.

Both are best effort: a platform without them (macOS has no prctl) starts anyway, and the log says so.
"""

from __future__ import annotations

import ctypes
import logging
import resource
import sys

logger = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def disable_core_dumps() -> None:
    """Set the core file size limit to 0 and, on Linux, mark the process not dumpable."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as exc:  # pragma: no cover - lowering a limit is always allowed on Linux
        logger.warning("could not disable core dumps (RLIMIT_CORE): %s", exc)
    if sys.platform.startswith("linux") and _prctl(PR_SET_DUMPABLE, 0) != 0:
        logger.warning("could not mark the process non-dumpable (prctl PR_SET_DUMPABLE)")


def is_dumpable() -> bool | None:
    """Whether the kernel would dump this process (None off Linux or when prctl is unavailable)."""
    if not sys.platform.startswith("linux"):
        return None
    answer = _prctl(PR_GET_DUMPABLE, 0)
    return None if answer < 0 else answer != 0


def _prctl(option: int, arg: int) -> int:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                              ctypes.c_ulong(0)))
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return -1
