"""Keys at the edges, tried as an attacker or an unlucky user would (review of the rejected/replaced keys work).

Through the real bot, the fake Telegram and the fake exchanges (real PTB, real ccxt signing).
"""

from __future__ import annotations

from tests.chat_helpers import USER, register
from tests.test_connect import assert_no_leak, deleted_ids


async def test_a_key_typed_after_connect_in_a_group_is_deleted(strata, fake_exchanges):
    api_key, _ = register(fake_exchanges, "binance")
    group = -100777
    strata.tg.add_group(group)
    typed = await strata.send(USER, f"/connect {api_key}", chat_id=group, chat_type="group")
    note = await strata.next_reply(group, contains="revoke")
    assert "private chat" in note.text
    assert typed["message_id"] in deleted_ids(strata, group)


async def test_a_key_and_secret_pasted_together_outside_connect_are_deleted(strata, fake_exchanges):
    api_key, secret = register(fake_exchanges, "binance")
    group = -100778
    strata.tg.add_group(group)
    pasted = await strata.send(USER, f"{api_key}\n{secret}", chat_id=group, chat_type="group")
    await strata.next_reply(group, contains="revoke")
    assert pasted["message_id"] in deleted_ids(strata, group)
    private = await strata.send(USER, f"{api_key} {secret}")
    await strata.next_reply(USER, contains="revoke")
    assert private["message_id"] in deleted_ids(strata, USER)
    assert_no_leak(strata, api_key, secret)
