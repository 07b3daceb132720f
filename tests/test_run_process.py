"""`python -m bot run` as an operator starts it: only the contract's environment, a real process, SIGTERM stops it;
one process per data folder and key store; core dumps off."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.plugins.strata import MASTER_KEY
from tests.test_cli import assert_opens_with, key_file, store_a_credential

REPO = Path(__file__).resolve().parents[1]


async def test_run_answers_start_and_stops_cleanly_on_sigterm(fake_telegram, fake_exchanges, tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "TELEGRAM_BOT_TOKEN": fake_telegram.token,
        "TELEGRAM_API_URL": fake_telegram.base_url,
        "STRATA_DATA_DIR": str(tmp_path / "data"),
        "STRATA_MASTER_KEY": MASTER_KEY,
        "STRATA_EXCHANGE_URLS": fake_exchanges.exchange_urls,
        "LOG_LEVEL": "DEBUG",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        fake_telegram.user_sends(7, "/start")
        welcome = await fake_telegram.wait_for_message(7, timeout=30)
        assert "Strata" in welcome.text
        assert {c["command"] for c in fake_telegram.commands} >= {"start", "connect", "allocate"}
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = output.decode()
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    assert fake_telegram.token not in text and fake_telegram.token.split(":")[1] not in text
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700


def run_env(fake_telegram, fake_exchanges, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "TELEGRAM_BOT_TOKEN": fake_telegram.token,
        "TELEGRAM_API_URL": fake_telegram.base_url,
        "STRATA_DATA_DIR": str(tmp_path / "data"),
        "STRATA_MASTER_KEY": MASTER_KEY,
        "STRATA_EXCHANGE_URLS": fake_exchanges.exchange_urls,
        "LOG_LEVEL": "DEBUG",
    }
    env.update(extra)
    return env


async def start_bot(fake_telegram, env: dict[str, str], cwd: Path, user_id: int = 7):
    """A `python -m bot run` process that has answered /start (so it holds its folder and is polling)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    fake_telegram.user_sends(user_id, "/start")
    welcome = await fake_telegram.wait_for_message(user_id, timeout=30)
    assert "Strata" in welcome.text
    return proc


async def stop_bot(proc) -> str:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    return output.decode()


async def run_to_end(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:  # it did not exit: it is running beside the first
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode()


def lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


async def test_a_second_run_on_the_same_folder_exits_non_zero_in_one_line_and_the_first_keeps_working(
    fake_telegram, fake_exchanges, tmp_path
):
    env = run_env(fake_telegram, fake_exchanges, tmp_path)
    first = await start_bot(fake_telegram, env, tmp_path)
    try:
        files_before = sorted(p.name for p in (tmp_path / "data").iterdir())
        sent_before = len(fake_telegram.outbox)

        code, out, err = await run_to_end("run", env=env, cwd=tmp_path)

        assert code != 0
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert "data folder" in lines[0] and str(tmp_path / "data") in lines[0] and "Traceback" not in err
        assert f"pid {first.pid}" in lines[0]
        assert sorted(p.name for p in (tmp_path / "data").iterdir()) == files_before
        assert len(fake_telegram.outbox) == sent_before  # the second never reached Telegram
        fake_telegram.user_sends(8, "/start")
        assert "Strata" in (await fake_telegram.wait_for_message(8, timeout=30)).text
    finally:
        output = await stop_bot(first)
    assert first.returncode == 0, output
    assert lock_is_free(tmp_path / "data" / "strata.lock")
    assert lock_is_free(tmp_path / "data" / "keystore.db.lock")


async def test_a_second_run_sharing_only_the_key_store_exits_non_zero(fake_telegram, fake_exchanges, tmp_path):
    keystore = tmp_path / "keys" / "keystore.db"
    first = await start_bot(fake_telegram, run_env(fake_telegram, fake_exchanges, tmp_path,
                                                   STRATA_KEYSTORE_PATH=str(keystore)), tmp_path)
    try:
        other = run_env(fake_telegram, fake_exchanges, tmp_path, STRATA_KEYSTORE_PATH=str(keystore),
                        STRATA_DATA_DIR=str(tmp_path / "other"))
        code, _, err = await run_to_end("run", env=other, cwd=tmp_path)

        assert code != 0
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "key store" in lines[0] and str(keystore) in lines[0], err
        assert not (tmp_path / "other" / "strata.db").exists()
    finally:
        output = await stop_bot(first)
    assert first.returncode == 0, output


async def test_rotate_master_key_while_run_holds_the_folder_exits_non_zero_and_changes_nothing(
    fake_telegram, fake_exchanges, tmp_path
):
    env = run_env(fake_telegram, fake_exchanges, tmp_path)
    old = base64.b64decode(MASTER_KEY)
    settings, sealed = await store_a_credential(tmp_path / "data", old)
    new_file = key_file(tmp_path / "new.key", os.urandom(32))
    first = await start_bot(fake_telegram, env, tmp_path)
    try:
        keystore_before = settings.keystore_path.read_bytes()

        code, out, err = await run_to_end("rotate-master-key", "--new-key-file", str(new_file), env=env, cwd=tmp_path)

        assert code != 0
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert "stop it first" in lines[0] and "Re-wrapped" not in out
        assert settings.keystore_path.read_bytes() == keystore_before
        await assert_opens_with(settings, sealed, old)
    finally:
        output = await stop_bot(first)
    assert first.returncode == 0, output

    # Once the bot has stopped the folder is free: the same rotation now goes through.
    code, out, err = await run_to_end("rotate-master-key", "--new-key-file", str(new_file), env=env, cwd=tmp_path)
    assert code == 0, err
    assert "Re-wrapped 1 data key" in out


async def test_run_starts_with_core_dumps_off(fake_telegram, fake_exchanges, tmp_path):
    first = await start_bot(fake_telegram, run_env(fake_telegram, fake_exchanges, tmp_path), tmp_path)
    try:
        limits = Path(f"/proc/{first.pid}/limits").read_text()
    finally:
        output = await stop_bot(first)
    assert first.returncode == 0, output
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core  # soft and hard limits


def test_disable_core_dumps_makes_the_process_non_dumpable(tmp_path):
    code = (
        "from bot.hardening import disable_core_dumps, is_dumpable\n"
        "import resource\n"
        "assert is_dumpable() is True\n"
        "disable_core_dumps()\n"
        "print(is_dumpable(), resource.getrlimit(resource.RLIMIT_CORE))\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"]},
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert result.stdout.strip() == "False (0, 0)"
