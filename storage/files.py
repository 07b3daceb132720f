"""Create the data folder and database files with owner-only permissions before SQLite touches them."""

from __future__ import annotations

import os
from pathlib import Path


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) as 0700; tighten an existing folder we own."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if path.stat().st_uid == os.getuid():
            path.chmod(0o700)
    except OSError:  # pragma: no cover - read-only or foreign folder: leave it
        pass


def ensure_private_file(path: Path) -> None:
    """Create `path` as 0600 if missing, so SQLite (and its -wal/-shm files) inherit that mode.

    A missing parent folder is created 0700; an existing one is left as it is (the key store may live in a
    folder such as a home directory whose mode is not ours to change).
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    path.chmod(0o600)
