"""No silence: mistyped commands and command names typed as text get the closest registered command, through the
real bot; guided flows, key intake and group chats keep their text."""

from __future__ import annotations

import asyncio

from telegram.ext import ApplicationBuilder, CommandHandler

from handlers import register_handlers
from handlers.fallback import closest_command, registered_commands
from tests.chat_helpers import USER, register, send_key_pair, start_connect


async def test_mistyped_commands_get_the_closest_registered_command(strata):
    for typed, expected in [("/alocate", "/allocate"), ("/stauts", "/status"), ("/Stauts", "/status"),
                            ("/strategy", "/strategies"), ("/halp", "/help"), ("/balanse", "/balance"),
                            ("/trade", "/trades"), ("/proffit", "/profit")]:
        await strata.send(USER, typed)
        answer = await strata.next_reply(USER)
        assert f"Did you mean {expected}?" in answer.text and "/help" in answer.text, (typed, answer.text)


async def test_a_command_name_typed_as_text_gets_a_pointer(strata):
    for typed, expected in [("status", "/status"), ("Help", "/help"), ("  ALLOCATE ", "/allocate"),
                            ("status 2", "/status 2")]:
        await strata.send(USER, typed)
        answer = await strata.next_reply(USER)
        assert f"Commands start with a slash: {expected}" in answer.text, (typed, answer.text)


async def test_known_commands_get_only_their_own_answer(strata):
    await strata.send(USER, "/help")
    help_text = await strata.next_reply(USER, contains="Commands")
    assert "/status 2" in help_text.text and "BTCUSDT" in help_text.text and "name=savings" in help_text.text
    await strata.send(USER, "/Status")  # PTB matches commands case-insensitively: /status answers it
    await strata.next_reply(USER, contains="No strategies yet")
    await asyncio.sleep(0.5)
    texts = [m.text or "" for m in strata.tg.sent if m.chat_id == USER]
    assert not any("Did you mean" in t or "I don't know" in t for t in texts)


async def test_ordinary_sentences_are_not_taken_for_commands(strata):
    await strata.send(USER, "stop buying please")
    await strata.send(USER, "/help")  # a marker: everything before it was read
    await strata.next_reply(USER, contains="Commands")
    await asyncio.sleep(0.3)
    assert not any("Commands start with a slash" in (m.text or "") for m in strata.tg.sent if m.chat_id == USER)


async def test_nothing_close_still_points_to_help(strata):
    await strata.send(USER, "/xyzzyq")
    answer = await strata.next_reply(USER)
    assert "I don't know /xyzzyq" in answer.text and "/help" in answer.text and "Did you mean" not in answer.text


def test_suggestions_come_from_the_registered_handlers_only():
    application = ApplicationBuilder().token("1:test").build()
    register_handlers(application, _FakeRuntime())
    commands = registered_commands(application)
    assert {"status", "allocate", "help", "stop"} <= set(commands)
    assert closest_command("stauts", commands) == "status"
    # A command suggested is one that answers: a command no handler registers (yet) is never offered.
    application.add_handler(CommandHandler("balance", lambda *_: None))
    assert closest_command("balanse", registered_commands(application)) == "balance"


class _FakeRuntime:
    """Just what `register_handlers` reads at wiring time (the stores are used only when updates arrive)."""

    intakes = None
    drafts = None


async def test_guided_allocation_text_is_not_taken_for_a_command(strata, fake_exchanges):
    from tests.chat_helpers import connect_account

    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_account(strata, fake_exchanges, "binance")
    await strata.send(USER, "/allocate")
    menu = await strata.next_reply(USER, contains="Which account")
    await strata.press(USER, menu, 0)
    await strata.next_reply(USER, contains="Which strategy")
    await strata.send(USER, "status")  # a draft is open: its text belongs to the flow, not to the fallback
    await asyncio.sleep(0.5)
    texts = [m.text or "" for m in strata.tg.sent if m.chat_id == USER]
    assert not any("Commands start with a slash" in t for t in texts)


async def test_key_intake_messages_are_not_answered_as_commands(strata, fake_exchanges):
    api_key, secret = register(fake_exchanges, "binance")
    await start_connect(strata, "Binance Spot")
    await send_key_pair(strata, api_key, secret)
    await strata.next_reply(USER, contains="Connected")
    texts = [m.text or "" for m in strata.tg.sent if m.chat_id == USER]
    assert not any("Did you mean" in t or "Commands start with a slash" in t for t in texts)


async def test_groups_stay_silent_for_unknown_text_and_commands(strata):
    group = -100777
    strata.tg.add_group(group)
    for text in ("status", "/stauts", "help"):
        await strata.send(USER, text, chat_id=group, chat_type="group")
    await strata.send(USER, "/help", chat_id=group, chat_type="group")  # a marker: the bot reads the group
    await strata.next_reply(group, contains="Commands")
    await asyncio.sleep(0.5)
    texts = [m.text or "" for m in strata.tg.sent if m.chat_id == group]
    assert not any("Did you mean" in t or "Commands start with a slash" in t or "I don't know" in t for t in texts)
