"""`python -m bot run` as an operator starts it: only the contract's environment, a real process, SIGTERM stops it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.plugins.strata import MASTER_KEY

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
