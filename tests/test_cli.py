"""`python -m bot` as an operator runs it: its own process, a minimal environment, one clear line on error."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.master_key import load_master_key
from bot.secret import Credentials
from bot.vault import MasterKeyMismatch, Vault
from storage.store import Store

REPO_ROOT = Path(__file__).resolve().parents[1]
FAKE_TOKEN = "123456789:AAF" + "a" * 32
# Never the real Telegram: a port nothing listens on, in case a test ever gets past start-up checks.
DEAD_API_URL = "http://127.0.0.1:9/bot"


def run_cli(*args: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "PYTHONPATH": str(REPO_ROOT)}
    env.update(variables)
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def key_file(path: Path, key: bytes) -> Path:
    path.write_text(base64.b64encode(key).decode() + "\n")
    return path


async def store_a_credential(data_dir: Path, master_key: bytes, keystore_path: Path | None = None):
    """Set up a deployment with one stored credential, as the connect flow leaves it."""
    env = {"STRATA_DATA_DIR": str(data_dir)}
    if keystore_path is not None:
        env["STRATA_KEYSTORE_PATH"] = str(keystore_path)
    settings = load_settings(env, dotenv=False)
    store = await Store.open(settings.database_path)
    vault = await Vault.open(settings.keystore_path, master_key)
    try:
        await store.users.upsert(7, 7)
        async with store.db.transaction() as tx:
            account_id = await store.accounts.create(tx, user_id=7, venue="kraken", label="kraken")
            sealed = await vault.seal(
                user_id=7,
                account_id=account_id,
                venue="kraken",
                credentials=Credentials("cli-key-1", "cli-secret-1"),
            )
            await store.accounts.store_credential(tx, sealed)
    finally:
        await vault.close()
        await store.close()
    return settings, sealed


async def assert_opens_with(settings, sealed, key: bytes) -> None:
    vault = await Vault.open(settings.keystore_path, key, expect_existing=True)
    try:
        creds = await vault.unseal(sealed, user_id=7, venue="kraken")
        assert creds.secret.reveal() == "cli-secret-1"
    finally:
        await vault.close()


@pytest.mark.parametrize("args", [["--help"], []], ids=["--help", "no-command"])
def test_help_lists_the_subcommands(tmp_path, args):
    result = run_cli(*args, cwd=tmp_path)

    assert result.returncode == 0
    for command in ("run", "demo", "rotate-master-key", "wind-down"):
        assert command in result.stdout


def test_run_without_a_token_exits_2_with_one_line_naming_the_variable(tmp_path):
    result = run_cli("run", cwd=tmp_path)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "TELEGRAM_BOT_TOKEN" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []  # nothing created: no data folder, no key


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STRATA_EXCHANGE_URLS", "binance=http://127.0.0.1:9001/api"),
        ("STRATA_SANDBOX", "2"),
        ("STRATA_FILL_POLL_SECONDS", "abc"),
        ("STRATA_MASTER_KEY", "too-short"),
        ("LOG_LEVEL", "LOUD"),
        ("TELEGRAM_API_URL", "ftp://example.org/bot"),
    ],
)
def test_run_with_a_bad_variable_exits_2_naming_it(tmp_path, variable, value):
    variables = {"TELEGRAM_BOT_TOKEN": FAKE_TOKEN, "TELEGRAM_API_URL": DEAD_API_URL, variable: value}
    result = run_cli("run", cwd=tmp_path, **variables)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr
    assert FAKE_TOKEN not in result.stderr + result.stdout


def test_run_reads_a_dotenv_file_in_the_working_directory(tmp_path):
    (tmp_path / ".env").write_text(f"TELEGRAM_BOT_TOKEN={FAKE_TOKEN}\nSTRATA_SANDBOX=7\n")

    result = run_cli("run", cwd=tmp_path)

    assert result.returncode == 2
    assert "STRATA_SANDBOX" in result.stderr  # got past the token check: the .env token was read


async def test_run_with_a_wrong_master_key_for_an_existing_key_store_exits_2_and_changes_nothing(tmp_path):
    right, wrong = os.urandom(32), os.urandom(32)
    settings, _ = await store_a_credential(tmp_path / "data", right)
    before = settings.keystore_path.read_bytes(), settings.database_path.read_bytes()

    result = run_cli(
        "run",
        cwd=tmp_path,
        TELEGRAM_BOT_TOKEN=FAKE_TOKEN,
        TELEGRAM_API_URL=DEAD_API_URL,
        STRATA_DATA_DIR=str(settings.data_dir),
        STRATA_MASTER_KEY=base64.b64encode(wrong).decode(),
    )

    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("strata:") and "master key" in last.lower()
    assert "Traceback" not in result.stderr
    assert base64.b64encode(wrong).decode() not in result.stderr
    assert (settings.keystore_path.read_bytes(), settings.database_path.read_bytes()) == before


async def test_run_with_a_missing_key_store_but_stored_credentials_exits_2(tmp_path):
    key = os.urandom(32)
    settings, _ = await store_a_credential(tmp_path / "data", key)

    result = run_cli(
        "run",
        cwd=tmp_path,
        TELEGRAM_BOT_TOKEN=FAKE_TOKEN,
        TELEGRAM_API_URL=DEAD_API_URL,
        STRATA_DATA_DIR=str(settings.data_dir),
        STRATA_KEYSTORE_PATH=str(tmp_path / "elsewhere" / "keystore.db"),
        STRATA_MASTER_KEY=base64.b64encode(key).decode(),
    )

    assert result.returncode == 2, result.stderr
    assert "STRATA_KEYSTORE_PATH" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "elsewhere").exists()


async def test_run_without_the_master_key_of_an_existing_key_store_exits_2_and_generates_nothing(tmp_path):
    settings, _ = await store_a_credential(tmp_path / "data", os.urandom(32))
    before = settings.keystore_path.read_bytes()

    result = run_cli(
        "run",
        cwd=tmp_path,
        TELEGRAM_BOT_TOKEN=FAKE_TOKEN,
        TELEGRAM_API_URL=DEAD_API_URL,
        STRATA_DATA_DIR=str(settings.data_dir),
    )

    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "STRATA_MASTER_KEY" in last and "STRATA_MASTER_KEY_FILE" in last
    assert "Traceback" not in result.stderr
    assert not (settings.data_dir / "master.key").exists()
    assert settings.keystore_path.read_bytes() == before


async def test_rotate_master_key_rewraps_so_the_old_key_is_refused_and_the_new_accepted(tmp_path):
    old, new = os.urandom(32), os.urandom(32)
    settings, sealed = await store_a_credential(tmp_path / "data", old)
    old_file, new_file = key_file(tmp_path / "old.key", old), key_file(tmp_path / "new.key", new)
    main_before = settings.database_path.read_bytes()

    result = run_cli(
        "rotate-master-key",
        "--new-key-file",
        str(new_file),
        cwd=tmp_path,
        STRATA_DATA_DIR=str(settings.data_dir),
        STRATA_MASTER_KEY_FILE=str(old_file),
    )

    assert result.returncode == 0, result.stderr
    assert "1 data key" in result.stdout
    assert settings.database_path.read_bytes() == main_before  # the main database is not touched
    with pytest.raises(MasterKeyMismatch):
        await Vault.open(settings.keystore_path, old)
    await assert_opens_with(settings, sealed, new)
    for key in (old, new):
        assert base64.b64encode(key).decode() not in result.stdout + result.stderr


async def test_rotate_master_key_replaces_a_generated_key_file(tmp_path):
    data_dir = tmp_path / "data"
    generated = load_master_key(load_settings({"STRATA_DATA_DIR": str(data_dir)}, dotenv=False))
    settings, sealed = await store_a_credential(data_dir, generated)
    new = os.urandom(32)

    result = run_cli(
        "rotate-master-key",
        "--new-key-file",
        str(key_file(tmp_path / "new.key", new)),
        cwd=tmp_path,
        STRATA_DATA_DIR=str(data_dir),
    )

    assert result.returncode == 0, result.stderr
    master_file = data_dir / "master.key"
    assert base64.b64decode(master_file.read_text().strip()) == new
    assert stat.S_IMODE(master_file.stat().st_mode) == 0o600
    await assert_opens_with(settings, sealed, load_master_key(settings, create=False))


async def test_rotate_master_key_with_the_wrong_current_key_exits_2_and_changes_nothing(tmp_path):
    settings, sealed = await store_a_credential(tmp_path / "data", right := os.urandom(32))
    before = settings.keystore_path.read_bytes()

    result = run_cli(
        "rotate-master-key",
        "--new-key-file",
        str(key_file(tmp_path / "new.key", os.urandom(32))),
        cwd=tmp_path,
        STRATA_DATA_DIR=str(settings.data_dir),
        STRATA_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(),
    )

    assert result.returncode == 2
    assert "master key" in result.stderr.lower() and "Traceback" not in result.stderr
    assert settings.keystore_path.read_bytes() == before
    await assert_opens_with(settings, sealed, right)


@pytest.mark.parametrize("content", ["not a key", "same"], ids=["malformed", "same-as-current"])
async def test_rotate_master_key_refuses_an_unusable_new_key_file(tmp_path, content):
    old = os.urandom(32)
    settings, sealed = await store_a_credential(tmp_path / "data", old)
    new_file = tmp_path / "new.key"
    new_file.write_text(base64.b64encode(old).decode() if content == "same" else content)
    before = settings.keystore_path.read_bytes()

    result = run_cli(
        "rotate-master-key",
        "--new-key-file",
        str(new_file),
        cwd=tmp_path,
        STRATA_DATA_DIR=str(settings.data_dir),
        STRATA_MASTER_KEY=base64.b64encode(old).decode(),
    )

    assert result.returncode == 2
    assert "--new-key-file" in result.stderr and "Traceback" not in result.stderr
    assert settings.keystore_path.read_bytes() == before
    await assert_opens_with(settings, sealed, old)


async def test_rotate_master_key_with_the_wrong_key_store_path_changes_nothing(tmp_path):
    data_dir = tmp_path / "data"
    generated = load_master_key(load_settings({"STRATA_DATA_DIR": str(data_dir)}, dotenv=False))
    elsewhere = tmp_path / "keys" / "keystore.db"
    settings, sealed = await store_a_credential(data_dir, generated, keystore_path=elsewhere)
    master_before = (data_dir / "master.key").read_bytes()

    # The operator forgot STRATA_KEYSTORE_PATH in this shell: the default key store does not exist.
    result = run_cli(
        "rotate-master-key", "--new-key-file", str(key_file(tmp_path / "new.key", os.urandom(32))),
        cwd=tmp_path, STRATA_DATA_DIR=str(data_dir),
    )

    assert result.returncode == 2
    assert "STRATA_KEYSTORE_PATH" in result.stderr and "Traceback" not in result.stderr
    assert (data_dir / "master.key").read_bytes() == master_before
    assert not (data_dir / "keystore.db").exists()
    await assert_opens_with(settings, sealed, generated)


async def test_run_with_a_refused_token_says_so_in_one_line_without_the_token(tmp_path, fake_telegram):
    # The fake answers in this event loop, so the bot runs as an asyncio subprocess (run_cli would block it).
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT),
        "TELEGRAM_BOT_TOKEN": FAKE_TOKEN, "TELEGRAM_API_URL": fake_telegram.base_url,
        "STRATA_DATA_DIR": str(tmp_path / "data"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode == 2
    # The last line is ours and actionable; PTB's own (redacted) log of the failed call may precede it.
    assert "TELEGRAM_BOT_TOKEN" in stderr.splitlines()[-1]
    assert stderr.splitlines()[-1].startswith("strata: ")
    assert FAKE_TOKEN.split(":")[1] not in stderr + stdout
