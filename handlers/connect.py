"""/connect: pick a venue, send the API key and the secret; every message of the intake is deleted at once.

    /connect ──► [venue buttons] ──► API key message ──► secret message ──► checking ──► stored | refused
    /connect replace <label> or the /accounts button ──► API key message ──► … ──► key replaced | refused
        any step: /cancel or 5 minutes without finishing ──► nothing stored
    /connect ──► "Paper" ──► [price source buttons] ──► Paper account opened (no key)
    /connect paper <binance|kraken> [amount] ──► Paper account opened

Edited messages count too: editing any message into a key during the intake gets it deleted like a new one.

The state lives in `bot.services.intake` (process memory), never in `context.user_data`.
"""

from __future__ import annotations

import logging
from decimal import Decimal, InvalidOperation

from telegram import Update
from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot.exchanges.venues import adapter, connectable, paper_venues
from bot.exchanges.venues.paper import DEFAULT_FUNDS, PAPER
from bot.exchanges.venues.paper import MARK as PAPER_MARK
from bot.redaction import register_possible_secret
from bot.secret import Credentials, Secret
from bot.services.errors import UserError
from bot.services.intake import Intake, IntakeBook, Step, looks_like_key
from bot.venues import venue_name
from handlers.common import Context, answer_and_edit, callback_int, esc, is_private, keyboard, reply, runtime
from handlers.render import connected_text, paper_opened_text, replaced_text

logger = logging.getLogger(__name__)

NOT_DELETED = (
    "⚠️ I could not delete your message. Delete it yourself now, and revoke that key on the exchange to be "
    "safe. Nothing was stored; /connect to start again with a new key."
)


def venue_keyboard():
    rows = [[(venue_name(v), f"connect:venue:{v}")] for v in connectable()]
    if paper_venues():
        rows.append([("Paper", "connect:paper")])
    return keyboard([*rows, [("Cancel", "connect:cancel")]])


def paper_keyboard():
    return keyboard(
        [[(venue_name(v.market_venue), f"connect:paper:{v.market_venue}")] for v in paper_venues()]
        + [[("Cancel", "connect:cancel")]]
    )


PAPER_USAGE = (
    "Usage: /connect paper &lt;{sources}&gt; [amount] — a Paper account on that exchange's live prices, "
    "with {funds} of simulated money unless you give an amount, e.g. /connect paper {first} 5000"
)


def _paper_usage() -> str:
    sources = [v.market_venue for v in paper_venues()]
    return PAPER_USAGE.format(sources="|".join(sources), funds=f"{DEFAULT_FUNDS:,}", first=sources[0])


def _paper_venue(source: str) -> str | None:
    """The Paper venue trading on `source` (`binance`, `kraken`; its human name too), or None."""
    wanted = source.strip().lower()
    for venue in paper_venues():
        if wanted in (venue.market_venue, venue_name(venue.market_venue).lower()):
            return venue.id
    return None


async def connect(update: Update, context: Context) -> None:
    # "/connect <key>": the key must not stay, in a group above all (checked before the private-chat refusal).
    if any(looks_like_key(arg) for arg in context.args or ()):
        register_possible_secret(update.effective_message.text)
        for arg in context.args:
            register_possible_secret(arg)
        try:
            await update.effective_message.delete()
        except TelegramError:
            await reply(update, NOT_DELETED)
            return
        if not is_private(update):
            await reply(update, "(Message deleted: it held a key the members of this chat may have seen: revoke it on "
                        "the exchange.) Keys are only accepted in a private chat with me: send /connect there.")
            return
        await reply(update, "(Message deleted: never put a key after /connect.) Send /connect, pick the exchange, "
                    "then send the key as its own message.")
        return
    if not is_private(update):
        await reply(
            update,
            "For your safety, keys are only accepted in a private chat. "
            f"Open a private chat with me (@{esc(context.bot.username)}) and send /connect there.",
        )
        return
    rt = runtime(context)
    user_id = update.effective_user.id
    if context.args and context.args[0].lower() == PAPER:
        await _paper_command(update, context)
        return
    if context.args:
        await _replace_command(update, context)
        return
    try:
        await rt.accounts.check_can_connect(user_id)
    except UserError as exc:
        await reply(update, f"❌ {esc(exc.message)}")
        return
    intakes: IntakeBook = rt.intakes
    intake = intakes.begin(user_id, update.effective_chat.id)
    message = await update.effective_chat.send_message(
        "Which exchange do you want to connect?\n"
        "You will create an API key that can trade but <b>cannot withdraw</b>, then send me the key and the "
        "secret. I delete those messages at once and store the key encrypted.",
        reply_markup=venue_keyboard(),
    )
    intake.menu_message_id = message.message_id


async def _paper_command(update: Update, context: Context) -> None:
    """`/connect paper <binance|kraken> [amount]`: open a Paper account at once."""
    args = context.args[1:]
    venue = _paper_venue(args[0]) if args else None
    funds = None
    if venue is not None and len(args) == 2:
        funds = _amount(args[1])
    if venue is None or len(args) > 2 or (len(args) == 2 and funds is None):
        await reply(update, _paper_usage())
        return
    await reply(update, await _open_paper(update, context, venue, funds))


def _amount(text: str) -> Decimal | None:
    try:
        value = Decimal(text.replace(",", "").replace("_", ""))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


async def _open_paper(update: Update, context: Context, venue: str, funds: Decimal | None) -> str:
    rt = runtime(context)
    source = adapter(venue).market_venue
    if rt.settings.sandbox and not adapter(source).testnet:
        return (
            f"{venue_name(source)} has no testnet, and this bot runs in testnet mode (STRATA_SANDBOX=1): a Paper "
            "account cannot use its prices here."
        )
    try:
        opened = await rt.accounts.connect_paper(update.effective_user.id, update.effective_chat.id, venue, funds)
    except UserError as exc:
        return f"❌ {esc(exc.message)}"
    return paper_opened_text(opened)


async def choose_paper(update: Update, context: Context) -> None:
    """The "Paper" button, then its price-source buttons (`connect:paper` → `connect:paper:<source>`)."""
    query = update.callback_query
    await query.answer()
    rt = runtime(context)
    intake = rt.intakes.get(update.effective_user.id)
    if intake is None or intake.step is not Step.VENUE:
        await answer_and_edit(update, "This menu has expired. Send /connect to start again.")
        return
    source = query.data.split(":")[2] if query.data.count(":") == 2 else None
    if source is None:
        await answer_and_edit(
            update,
            f"{PAPER_MARK} <b>account</b>: strategies trade with simulated money ({DEFAULT_FUNDS:,} in the "
            "exchange's quote currency) on a real exchange's <b>live public prices</b>, with its fees and "
            "minimums. No key needed, nothing real is bought or sold.\nWhich exchange's prices?",
            paper_keyboard(),
        )
        return
    rt.intakes.clear(intake.user_id)
    venue = _paper_venue(source)
    if venue is None:
        await answer_and_edit(update, "This menu has expired. Send /connect to start again.")
        return
    await answer_and_edit(update, await _open_paper(update, context, venue, None))


REPLACE_USAGE = "Usage: /connect replace &lt;label&gt; — give an account a new API key; its strategies are kept."


async def _replace_command(update: Update, context: Context) -> None:
    """`/connect replace <label>`: start an intake whose key replaces that account's key."""
    rt = runtime(context)
    args = context.args
    if len(args) != 2 or args[0].lower() != "replace":
        await reply(update, REPLACE_USAGE)
        return
    account = await rt.accounts.by_label(update.effective_user.id, args[1])
    if account is None:
        await reply(update, f"You have no account labelled {esc(args[1])}. See /accounts.")
        return
    await reply(update, _begin_replace(rt, update, account))


def _begin_replace(rt, update: Update, account) -> str:
    intake = rt.intakes.begin(update.effective_user.id, update.effective_chat.id)
    intake.venue = account.venue
    intake.replace_account_id = account.id
    intake.replace_label = account.label
    intake.step = Step.API_KEY
    return (
        f"<b>New key for {esc(account.label)}</b> ({venue_name(account.venue)})\n{adapter(account.venue).key_guide}\n\n"
        "It must be a key of the <b>same exchange account</b>; the account's strategies are kept (paused ones "
        "stay paused until you /resume them).\n"
        "Now send the <b>API key</b> as a message. I delete it at once. /cancel to stop."
    )


async def replace_button(update: Update, context: Context) -> None:
    """The /accounts button "New key for <label>"."""
    query = update.callback_query
    await query.answer()
    rt = runtime(context)
    account_id = callback_int(query.data, 2)
    if not is_private(update):
        await answer_and_edit(update, "For your safety, keys are only accepted in a private chat.")
        return
    try:
        if account_id is None:
            raise UserError("That account is not (or no longer) connected.")
        account = await rt.accounts.owned(update.effective_user.id, account_id)
    except UserError as exc:
        await answer_and_edit(update, esc(exc.message))
        return
    await reply(update, _begin_replace(rt, update, account))


async def choose_venue(update: Update, context: Context) -> None:
    query = update.callback_query
    await query.answer()
    rt = runtime(context)
    intake = rt.intakes.get(update.effective_user.id)
    venue = query.data.rsplit(":", 1)[-1]
    if intake is None or intake.step is not Step.VENUE or venue not in connectable():
        await answer_and_edit(update, "This menu has expired. Send /connect to start again.")
        return
    if rt.settings.sandbox and not adapter(venue).testnet:
        await answer_and_edit(
            update, f"{venue_name(venue)} has no testnet, and this bot runs in testnet mode (STRATA_SANDBOX=1). "
            f"Pick one of: {', '.join(venue_name(v) for v in connectable() if adapter(v).testnet)}."
        )
        rt.intakes.clear(intake.user_id)
        return
    intake.venue = venue
    intake.step = Step.API_KEY
    key_name = "API key"
    await answer_and_edit(
        update,
        f"<b>{venue_name(venue)}</b>\n{adapter(venue).key_guide}\n\n"
        f"Now send the <b>{key_name}</b> as a message. I delete it at once. /cancel to stop.",
    )


async def cancel_button(update: Update, context: Context) -> None:
    await update.callback_query.answer()
    runtime(context).intakes.clear(update.effective_user.id)
    await answer_and_edit(update, "Cancelled: nothing was stored.")


class _InIntake(filters.MessageFilter):
    """A private message (new or edited) from a user whose key intake is in progress.

    New commands pass unless key-shaped; an edit is always taken: a message edited during the intake may now
    hold the key, and its text is not worth the risk.
    """

    def __init__(self, intakes: IntakeBook) -> None:
        super().__init__(name="InIntake")
        self._intakes = intakes

    def filter(self, message) -> bool:
        if message.chat.type != "private" or message.from_user is None:
            return False
        user_id = message.from_user.id
        edited = message.edit_date is not None
        when = message.edit_date if edited else message.date
        if self._intakes.get(user_id) is None and not self._intakes.sent_during_intake(user_id, when):
            return False
        text = message.text or message.caption or ""
        return edited or not text.startswith("/") or looks_like_key(text)


async def intake_message(update: Update, context: Context) -> None:
    """Delete the message first, whatever happens next; then advance the intake (never with an edit)."""
    message = update.effective_message
    text = (message.text or message.caption or "").strip()
    if text:
        register_possible_secret(text)
    rt = runtime(context)
    intake: Intake | None = rt.intakes.get(update.effective_user.id)
    try:
        await message.delete()
    except TelegramError:
        rt.intakes.clear(update.effective_user.id)
        await reply(update, NOT_DELETED)
        raise ApplicationHandlerStop from None
    if update.edited_message is not None:
        await reply(
            update,
            "(Edited message deleted: during /connect, every message you edit is deleted. Send the key as a new "
            "message.)" if intake is not None else "(Edited message deleted: it was edited while I was handling "
            "your key.)",
        )
    elif intake is not None:
        await _advance(update, context, intake, text)
    else:  # sent while the key was being checked (handled after it), or as the intake expired
        await reply(update, "(Message deleted: it arrived while I was handling your key.)")
    raise ApplicationHandlerStop


async def _advance(update: Update, context: Context, intake: Intake, text: str) -> None:
    rt = runtime(context)
    if intake.step is Step.VENUE:
        await reply(update, "(Message deleted.) First pick an exchange with the buttons above, or /cancel.")
        return
    if not text:
        await reply(update, "(Message deleted.) Please send the key as a plain text message, or /cancel.")
        return
    secret_name = adapter(intake.venue).key_names[1]
    if intake.step is Step.API_KEY:
        parts = text.split()
        if len(parts) == 2:  # key and secret pasted together, one per line: take both
            intake.api_key, text = Secret(parts[0]), parts[1]
            register_possible_secret(parts[0])
            register_possible_secret(parts[1])
            intake.step = Step.SECRET
            await _check_and_store(update, context, intake, text, secret_name)
            return
        try:
            rt.accounts.check_key_format(intake.venue, text)
        except UserError as exc:
            await reply(update, f"(Message deleted.) {esc(exc.message)}\nSend the API key again, or /cancel.")
            return
        intake.api_key = Secret(text)
        intake.step = Step.SECRET
        await reply(update, f"Got the API key (message deleted). Now send the <b>{secret_name}</b>.")
        return
    await _check_and_store(update, context, intake, text, secret_name)


async def _check_and_store(update: Update, context: Context, intake: Intake, text: str, secret_name: str) -> None:
    """The secret has arrived: format check, then validation with the exchange, then storage."""
    rt = runtime(context)
    api_key = intake.api_key
    try:
        rt.accounts.check_key_format(intake.venue, api_key.reveal(), text)
    except UserError as exc:
        await reply(update, f"(Message deleted.) {esc(exc.message)}\nSend the {secret_name} again, or /cancel.")
        return
    intake.step = Step.CHECKING
    rt.intakes.hold(intake)
    await reply(update, f"Got it (message deleted). Checking the key with {venue_name(intake.venue)}…")
    try:
        await update.effective_chat.send_action(ChatAction.TYPING)
    except TelegramError:  # a typing indicator is a nicety; the check goes on without it
        pass
    credentials = Credentials(api_key, Secret(text))
    try:
        if intake.replace_account_id is not None:
            replaced = await rt.accounts.replace_key(intake.user_id, intake.replace_account_id, credentials)
        else:
            connected = await rt.accounts.connect(intake.user_id, intake.chat_id, intake.venue, credentials)
    except UserError as exc:
        again = f"/connect replace {esc(intake.replace_label)}" if intake.replace_label else "/connect"
        await reply(update, f"❌ {esc(exc.message)}\nNothing was stored. {again} to try again.")
    except Exception:
        logger.exception("connect failed for user %s", intake.user_id)
        await reply(update, "❌ Something went wrong while checking the key. Nothing was stored; please try again.")
    else:
        replacing = intake.replace_account_id is not None
        await reply(update, replaced_text(replaced) if replacing else connected_text(connected))
    finally:
        rt.intakes.clear(intake.user_id)


async def expired(intake: Intake, bot) -> None:
    try:
        await bot.send_message(
            intake.chat_id, "⌛ /connect timed out after 5 minutes: nothing was stored. Send /connect to start again."
        )
    except TelegramError:
        logger.info("could not tell user %s that /connect timed out", intake.user_id)


def handlers(intakes: IntakeBook) -> list[tuple[int, object]]:
    return [
        (-1, MessageHandler(_InIntake(intakes), intake_message)),
        (0, CommandHandler("connect", connect)),
        (0, CallbackQueryHandler(replace_button, pattern=r"^connect:replace:")),
        (0, CallbackQueryHandler(choose_venue, pattern=r"^connect:venue:")),
        (0, CallbackQueryHandler(choose_paper, pattern=r"^connect:paper(:|$)")),
        (0, CallbackQueryHandler(cancel_button, pattern=r"^connect:cancel$")),
    ]
