"""Find the master key: STRATA_MASTER_KEY, STRATA_MASTER_KEY_FILE, or a key generated once into the data folder."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

from bot.config import ConfigError, Settings, decode_master_key
from bot.vault import where
from storage.files import ensure_private_dir
from storage.keystore import keystore_exists

logger = logging.getLogger(__name__)


def load_master_key(settings: Settings, *, create: bool = True) -> bytes:
    """Return the 32-byte master key; generate `$STRATA_DATA_DIR/master.key` (0600) only when none is configured."""
    if settings.master_key is not None:
        return decode_master_key(settings.master_key.reveal(), "STRATA_MASTER_KEY")
    if settings.master_key_file is not None:
        return read_key_file(settings.master_key_file, "STRATA_MASTER_KEY_FILE")
    path = settings.default_master_key_path
    if path.exists():
        return read_key_file(path, f"the generated master key file {path}")
    if not create:
        raise ConfigError(f"No master key: set STRATA_MASTER_KEY or STRATA_MASTER_KEY_FILE ({path} does not exist).")
    keystore = settings.keystore
    if keystore_exists(keystore):  # (a key store on PostgreSQL: the vault's own check refuses a new key)
        # A new key could never open an existing key store: stop with the real cause and create nothing.
        raise ConfigError(
            "No master key: set STRATA_MASTER_KEY or STRATA_MASTER_KEY_FILE to the key of the existing key "
            f"store {where(keystore)} ({path} does not exist; nothing was changed)."
        )
    ensure_private_dir(path.parent)
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
    logger.warning(
        "Generated a new master key at %s. Keep a copy somewhere safe and, in production, move it to another "
        "volume than the databases (then set STRATA_MASTER_KEY_FILE).",
        path,
    )
    return key


def read_key_file(path: Path, source: str) -> bytes:
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {path} ({exc.strerror}).") from None
    return decode_master_key(text, source)
