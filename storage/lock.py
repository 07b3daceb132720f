"""One process per data folder and per key store: an exclusive `flock` on a lock file beside each.

Two processes on one data folder would send every alert twice and trade the same strategies twice, and a
`rotate-master-key` beside a running bot would re-wrap the data keys while the bot keeps wrapping new ones
under the old master key. So `run`, `demo` and `rotate-master-key` take both locks before they migrate,
generate or write anything, and hold them for the life of the process. The key store gets its own lock
because it may live in another folder, shared by mistake between two data folders.

`flock` locks belong to the open file: the kernel drops them when the process ends, however it ends (a
SIGKILL or a crash leaves no stale lock behind), and the file descriptor is not inherited by children.
The lock file holds the owner's pid, for the message only; its presence means nothing.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

DATA_LOCK_NAME = "strata.lock"


class FolderInUse(Exception):
    """Another process holds the data folder or the key store; the message says which and what to do."""


def data_lock_path(data_dir: Path) -> Path:
    return data_dir / DATA_LOCK_NAME


def keystore_lock_path(keystore_path: Path) -> Path:
    return keystore_path.with_name(keystore_path.name + ".lock")


class ProcessLocks:
    """The data folder's and the key store's locks, taken together and released together."""

    def __init__(self, data_dir: Path, keystore_path: Path) -> None:
        self._wanted = (
            (data_lock_path(data_dir), f"the data folder {data_dir}"),
            (keystore_lock_path(keystore_path), f"the key store {keystore_path}"),
        )
        self._held: dict[Path, int] = {}

    def acquire(self) -> None:
        """Lock each of the two whose folder exists (call again to cover one created since); raise `FolderInUse`.

        A folder that does not exist yet is not created here: nothing else can be using it, and the caller's
        own checks may still refuse to start (a missing key store must stay missing).
        """
        for path, what in self._wanted:
            if path in self._held or not path.parent.is_dir():
                continue
            self._held[path] = _lock(path, what)

    def release(self) -> None:
        for fd in self._held.values():
            os.close(fd)  # closing the descriptor drops the lock
        self._held.clear()

    @property
    def held(self) -> tuple[Path, ...]:
        return tuple(self._held)

    def __enter__(self) -> ProcessLocks:
        try:
            self.acquire()
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _lock(path: Path, what: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _owner(fd)
        os.close(fd)
        raise FolderInUse(
            f"Another Strata process{owner} is using {what}: stop it first (nothing was changed)."
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _owner(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""
