"""/start and /help, and the command menu set at start-up."""

from __future__ import annotations

import logging

from telegram import BotCommand, Update
from telegram.error import TelegramError
from telegram.ext import CommandHandler

from bot.engine.figures import GLOSSARY
from handlers.common import Context, esc, reply, runtime

logger = logging.getLogger(__name__)

COMMANDS: list[tuple[str, str]] = [
    ("start", "Welcome and what to do first"),
    ("help", "Every command in one line each"),
    ("connect", "Connect an exchange account (private chat)"),
    ("accounts", "Your accounts, balances and futures positions"),
    ("disconnect", "Remove an account: stops its strategies, shreds its key"),
    ("allocate", "Give a strategy a budget"),
    ("strategies", "The strategies and their parameters"),
    ("backtest", "Replay a strategy over past candles: chart and P&L, no account needed"),
    ("status", "How your strategies are doing; /status 2 shows one in detail"),
    ("balance", "Each account's assets and what strategies hold"),
    ("trades", "Recent fills: all, or one strategy's (/trades 3)"),
    ("profit", "Profit net of fees and ROI: /profit [day|week|month]"),
    ("chart", "A strategy's value against buy & hold, as a picture: /chart 3"),
    ("pause", "Pause a strategy"),
    ("resume", "Resume a paused strategy; /resume all after /panic"),
    ("edit", "Change a strategy's budget or name: /edit 3 budget=150"),
    ("stop", "Stop a strategy: keep or sell its holdings"),
    ("panic", "Pause everything, cancel all open orders (and sell, if you choose)"),
    ("settings", "Alerts, daily summary, time zone (/settings tz Europe/Paris)"),
    ("history", "What was done on your accounts and strategies, newest first"),
    ("cancel", "End the current guided step"),
]

WELCOME = (
    "<b>Strata</b> runs trading strategies (DCA, grid, rebalance, trend) on <i>your own</i> exchange account, "
    "24/7, and tells you about every fill.\n\n"
    "🔒 Your keys can trade but never withdraw: keys that can withdraw are refused. "
    "They are stored encrypted, and the messages that carry them are deleted at once.\n\n"
    "Next step: /connect an exchange account (or a 📝 Paper one, simulated money, to try first), then /allocate a "
    "budget to a strategy. /help lists every command."
)


ADMIN_COMMANDS: list[tuple[str, str]] = [
    ("users", "(admins) Who uses the bot: approve, block, unblock"),
]


def help_text(*, admin: bool = False) -> str:
    lines = ["<b>Commands</b>"] + [f"/{name} — {text}" for name, text in COMMANDS + (ADMIN_COMMANDS if admin else [])]
    lines += [
        "",
        "One-line forms: <code>/allocate &lt;account&gt; &lt;strategy&gt; &lt;budget&gt; &lt;symbol&gt; "
        "[param=value …]</code>, e.g. <code>/allocate binance dca 100 BTC/USDT every=1d amount=10</code>.",
        "Markets can be written <code>BTC/USDT</code>, <code>BTCUSDT</code>, <code>btc-usdt</code> or "
        "<code>BTC_USDT</code>; add <code>name=savings</code> to name a strategy (shown in /status and alerts).",
        "<code>/connect replace &lt;label&gt;</code> — give an account a new API key of the same exchange account "
        "(a rejected or expiring key); its strategies are kept.",
        "<code>/connect paper &lt;binance|kraken&gt; [amount]</code> — a 📝 Paper account: simulated money (10,000 "
        "USDT, USD on Kraken, unless you say) filled on that exchange's live prices, no key. Try a strategy first.",
        "",
        "<b>The figures</b> (alerts, /status, /stop, /profit)",
        *(f"<i>{esc(word)}</i> — {esc(meaning)}" for word, meaning in GLOSSARY),
    ]
    return "\n".join(lines)


async def start(update: Update, context: Context) -> None:
    user, chat = update.effective_user, update.effective_chat
    if user is not None and chat is not None and chat.type == "private":
        await runtime(context).store.users.upsert(user.id, chat.id)
    await reply(update, WELCOME)


async def help_command(update: Update, context: Context) -> None:
    user = update.effective_user
    await reply(update, help_text(admin=user is not None and runtime(context).access.is_admin(user.id)))


async def set_commands(bot) -> None:
    """Publish the command menu; a failure is logged, never fatal (the commands work without the menu)."""
    try:
        await bot.set_my_commands([BotCommand(name, text) for name, text in COMMANDS])
    except TelegramError as exc:
        logger.warning("could not publish the command menu: %s", exc)


def handlers() -> list:
    return [CommandHandler("start", start), CommandHandler("help", help_command)]
