"""The Bot API methods the fake Telegram answers, with Telegram's JSON shapes and error descriptions.

`call()` takes a method name and decoded parameters and returns the HTTP status and JSON body, exactly as
the real server would for the cases the bot meets: success, unknown chat or message, blocked user, flood
limits (429 + retry_after), malformed keyboards or HTML, and injected faults.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.sandbox.telegram_html import HtmlError, render_html
from bot.sandbox.telegram_world import JSON, ApiError, TelegramWorld

Params = dict[str, Any]
Handler = Callable[[TelegramWorld, Params], Any | Awaitable[Any]]

NOT_FOUND: JSON = {"ok": False, "error_code": 404, "description": "Not Found"}
UNAUTHORIZED: JSON = {"ok": False, "error_code": 401, "description": "Unauthorized"}

# Parameters whose value is text even when it looks like JSON ("123", "true").
_TEXT_PARAMS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "action",
        "photo",
        "url",
        "language_code",
        "inline_message_id",
        "business_connection_id",
        "message_effect_id",
    }
)
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
_EMPTY_TEXT = "Bad Request: message text is empty"
_MAX_INLINE_BUTTONS = 100  # Telegram refuses a bigger inline keyboard
_TEXT_BUTTONS = "Text buttons are unallowed in the inline keyboard"
_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_BUTTON_ACTIONS = frozenset(
    {
        "url",
        "callback_data",
        "web_app",
        "login_url",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "copy_text",
        "callback_game",
        "pay",
    }
)


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file sent in a multipart request (sendPhoto with bytes rather than a file id)."""

    filename: str
    content_type: str
    data: bytes


def decode_params(raw: Mapping[str, Any]) -> Params:
    """Turn request fields into values: PTB sends every non-string as a JSON-encoded form field."""
    decoded: Params = {}
    for key, value in raw.items():
        if isinstance(value, str) and key not in _TEXT_PARAMS:
            try:
                value = json.loads(value)
            except ValueError:
                pass
        decoded[key] = value
    return decoded


async def call(world: TelegramWorld, method: str, params: Params) -> tuple[int, JSON]:
    """Answer one Bot API call: (HTTP status, JSON body)."""
    world.calls[method] += 1
    handler = _METHODS.get(method.lower())
    if handler is None:
        return 404, dict(NOT_FOUND)
    try:
        fault = world.take_fault(method)
        if fault is not None:
            parameters = {"retry_after": fault.retry_after} if fault.retry_after is not None else None
            raise ApiError(fault.status, fault.description, parameters)
        result = handler(world, params)
        if inspect.isawaitable(result):
            result = await result
    except ApiError as error:
        world.note_rejection(method, params.get("chat_id"), error)
        body: JSON = {"ok": False, "error_code": error.status, "description": error.description}
        if error.parameters:
            body["parameters"] = error.parameters
        return error.status, body
    return 200, {"ok": True, "result": result}


# ---- shared checks ----------------------------------------------------------------------------------


def _chat(world: TelegramWorld, params: Params) -> int:
    chat_id = params.get("chat_id")
    if chat_id is None or chat_id == "":
        raise ApiError(400, "Bad Request: chat_id is empty")
    if not isinstance(chat_id, int) or world.chat(chat_id) is None:
        raise ApiError(400, "Bad Request: chat not found")
    return chat_id


def _writable_chat(world: TelegramWorld, params: Params) -> int:
    chat_id = _chat(world, params)
    if world.is_blocked(chat_id):
        reason = "bot was blocked by the user" if chat_id > 0 else "bot was kicked from the group chat"
        raise ApiError(403, f"Forbidden: {reason}")
    return chat_id


def _admit(world: TelegramWorld, method: str, chat_id: int) -> None:
    retry_after = world.admit(method, chat_id)
    if retry_after is not None:
        raise ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})


@dataclass(frozen=True, slots=True)
class _Text:
    source: str  # as the bot sent it
    fields: JSON  # as the Message carries it: plain text and entities


def _text(params: Params, key: str, *, limit: int, empty: str, too_long: str) -> _Text | None:
    """Validate a text/caption like Telegram: markup must parse, rendered text non-empty and within limit."""
    if params.get(key) is None:
        return None
    source = str(params[key])
    entities_key = "entities" if key == "text" else "caption_entities"
    plain, entities = source, params.get(entities_key)
    if str(params.get("parse_mode") or "").upper() == "HTML":
        try:
            plain, entities = render_html(source)
        except HtmlError as error:
            raise ApiError(400, f"Bad Request: can't parse entities: {error}") from error
    if not plain.strip():
        raise ApiError(400, empty)
    if len(plain) > limit:
        raise ApiError(400, too_long)
    return _Text(source, {key: plain, entities_key: entities or None})


def _message_text(params: Params) -> _Text:
    text = _text(params, "text", limit=4096, empty=_EMPTY_TEXT, too_long="Bad Request: message is too long")
    if text is None:
        raise ApiError(400, _EMPTY_TEXT)
    return text


def _caption(params: Params) -> _Text | None:
    return _text(
        params,
        "caption",
        limit=1024,
        empty="Bad Request: message caption is empty",
        too_long="Bad Request: message caption is too long",
    )


def _source(params: Params, key: str, text: _Text | None) -> JSON:
    return {key: text.source if text else None, "parse_mode": params.get("parse_mode")}


def _inline_keyboard(params: Params) -> JSON | None:
    """The inline keyboard a message will carry (other reply markups are not part of the Message)."""
    markup = params.get("reply_markup")
    if not isinstance(markup, dict) or "inline_keyboard" not in markup:
        return None
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ApiError(400, 'Bad Request: can\'t parse inline keyboard: field "inline_keyboard" must be an Array')
    if sum(len(row) for row in rows) > _MAX_INLINE_BUTTONS:
        raise ApiError(400, "Bad Request: reply markup is too long")
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not button.get("text"):
                raise ApiError(400, "Bad Request: can't parse inline keyboard button: Text must be non-empty")
            if not _BUTTON_ACTIONS & button.keys():
                raise ApiError(400, f"Bad Request: can't parse inline keyboard button: {_TEXT_BUTTONS}")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return {"inline_keyboard": rows}


def _bot_message(world: TelegramWorld, params: Params, action: str) -> tuple[int, int, JSON]:
    """Resolve chat_id + message_id of a message the bot may edit; Telegram's errors otherwise."""
    if params.get("inline_message_id"):
        raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
    chat_id = _writable_chat(world, params)
    message_id = params.get("message_id")
    if message_id is None:
        raise ApiError(400, "Bad Request: message identifier is not specified")
    stored = world.stored_message(chat_id, message_id) if isinstance(message_id, int) else None
    if stored is None:
        raise ApiError(400, f"Bad Request: message to {action} not found")
    if not world.is_from_bot(stored):
        raise ApiError(400, "Bad Request: message can't be edited")
    return chat_id, message_id, stored


def _reply_to(world: TelegramWorld, chat_id: int, params: Params) -> JSON:
    """The `reply_to_message` field for a reply (reply_parameters, or the older reply_to_message_id)."""
    reply = params.get("reply_parameters")
    reply = dict(reply) if isinstance(reply, dict) else {}
    if params.get("reply_to_message_id") is not None:
        reply.setdefault("message_id", params["reply_to_message_id"])
        reply.setdefault("allow_sending_without_reply", params.get("allow_sending_without_reply", False))
    if reply.get("message_id") is None:
        return {}
    target_chat = reply.get("chat_id", chat_id)
    original = world.stored_message(target_chat, reply["message_id"]) if isinstance(target_chat, int) else None
    if original is None:
        if reply.get("allow_sending_without_reply"):
            return {}
        raise ApiError(400, "Bad Request: message to be replied not found")
    return {"reply_to_message": {k: v for k, v in original.items() if k != "reply_to_message"}}


def _content(params: Params, *texts: _Text | None, **fields: Any) -> JSON:
    keyboard = _inline_keyboard(params)
    for text in texts:
        fields.update(text.fields if text else {})
    content = {key: value for key, value in fields.items() if value is not None}
    if keyboard is not None:
        content["reply_markup"] = keyboard
    return content


# ---- methods ----------------------------------------------------------------------------------------


def _get_me(world: TelegramWorld, params: Params) -> JSON:
    return {
        **world.bot_user,
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


async def _get_updates(world: TelegramWorld, params: Params) -> list[JSON]:
    offset = params.get("offset")
    limit = params.get("limit", 100)
    timeout = params.get("timeout", 0)
    if not isinstance(offset, int | None) or not isinstance(limit, int) or not isinstance(timeout, int | float):
        raise ApiError(400, "Bad Request: wrong parameter type")
    return await world.next_updates(offset, max(1, min(100, limit)), max(0.0, float(timeout)))


def _delete_webhook(world: TelegramWorld, params: Params) -> bool:
    if params.get("drop_pending_updates"):
        world.drop_pending_updates()
    return True


def _get_webhook_info(world: TelegramWorld, params: Params) -> JSON:
    return {"url": "", "has_custom_certificate": False, "pending_update_count": world.pending_updates}


def _set_my_commands(world: TelegramWorld, params: Params) -> bool:
    commands = params.get("commands")
    if not isinstance(commands, list) or len(commands) > 100:
        raise ApiError(400, "Bad Request: commands must be an array of at most 100 BotCommand")
    for command in commands:
        name = str(command.get("command", "")) if isinstance(command, dict) else ""
        if not (1 <= len(name) <= 32 and all(c.islower() or c.isdigit() or c == "_" for c in name)):
            raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        if not 1 <= len(str(command.get("description", ""))) <= 256:
            raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
    world.set_commands(commands, params.get("scope"), params.get("language_code"))
    return True


def _get_my_commands(world: TelegramWorld, params: Params) -> list[JSON]:
    return world.get_commands(params.get("scope"), params.get("language_code"))


def _delete_my_commands(world: TelegramWorld, params: Params) -> bool:
    world.delete_commands(params.get("scope"), params.get("language_code"))
    return True


def _send_message(world: TelegramWorld, params: Params) -> JSON:
    chat_id = _writable_chat(world, params)
    text = _message_text(params)
    content = {**_content(params, text), **_reply_to(world, chat_id, params)}
    _admit(world, "sendMessage", chat_id)
    return world.post_bot_message("sendMessage", chat_id, content, params, _source(params, "text", text))


def _send_photo(world: TelegramWorld, params: Params) -> JSON:
    chat_id = _writable_chat(world, params)
    photo = params.get("photo")
    if not photo:
        raise ApiError(400, "Bad Request: there is no photo in the request")
    caption = _caption(params)
    content = {**_content(params, caption, photo=_photo_sizes(photo)), **_reply_to(world, chat_id, params)}
    _admit(world, "sendPhoto", chat_id)
    return world.post_bot_message("sendPhoto", chat_id, content, params, _source(params, "caption", caption))


def _photo_sizes(photo: UploadedFile | str) -> list[JSON]:
    identity = photo.data if isinstance(photo, UploadedFile) else str(photo).encode()
    digest = hashlib.sha256(identity).hexdigest()
    size = len(photo.data) if isinstance(photo, UploadedFile) else 4096
    return [
        {
            "file_id": f"AgAC{digest[:24]}{side}",
            "file_unique_id": f"AQAD{digest[:12]}{side}",
            "width": side,
            "height": side,
            "file_size": max(1, size * side // 1280),
        }
        for side in (90, 320, 1280)
    ]


def _unchanged(stored: JSON, changes: JSON) -> bool:
    """Telegram refuses an edit that changes nothing the user sees."""
    return all(stored.get(key) == value for key, value in changes.items())


def _edit_message_text(world: TelegramWorld, params: Params) -> JSON:
    chat_id, message_id, stored = _bot_message(world, params, "edit")
    text = _message_text(params)
    if "text" not in stored:
        raise ApiError(400, "Bad Request: there is no text in the message to edit")
    changes = {**text.fields, "reply_markup": _inline_keyboard(params)}
    if _unchanged(stored, changes):
        raise ApiError(400, _NOT_MODIFIED)
    _admit(world, "editMessageText", chat_id)
    return world.edit_bot_message(
        "editMessageText", chat_id, message_id, changes, params, _source(params, "text", text)
    )


def _edit_message_caption(world: TelegramWorld, params: Params) -> JSON:
    chat_id, message_id, stored = _bot_message(world, params, "edit")
    if "photo" not in stored:
        raise ApiError(400, "Bad Request: there is no caption in the message to edit")
    caption = _caption(params)
    changes = {
        **(caption.fields if caption else {"caption": None, "caption_entities": None}),
        "reply_markup": _inline_keyboard(params),
    }
    if _unchanged(stored, changes):
        raise ApiError(400, _NOT_MODIFIED)
    _admit(world, "editMessageCaption", chat_id)
    return world.edit_bot_message(
        "editMessageCaption", chat_id, message_id, changes, params, _source(params, "caption", caption)
    )


def _edit_message_reply_markup(world: TelegramWorld, params: Params) -> JSON:
    chat_id, message_id, stored = _bot_message(world, params, "edit")
    changes = {"reply_markup": _inline_keyboard(params)}
    if _unchanged(stored, changes):
        raise ApiError(400, _NOT_MODIFIED)
    _admit(world, "editMessageReplyMarkup", chat_id)
    return world.edit_bot_message("editMessageReplyMarkup", chat_id, message_id, changes, params, {})


def _delete_message(world: TelegramWorld, params: Params) -> bool:
    chat_id = _chat(world, params)
    message_id = params.get("message_id")
    if message_id is None:
        raise ApiError(400, "Bad Request: message identifier is not specified")
    failure = world.delete_failure(chat_id)
    if failure is not None:
        raise ApiError(400, failure)
    if not isinstance(message_id, int) or not world.delete(chat_id, message_id):
        raise ApiError(400, "Bad Request: message to delete not found")
    return True


def _answer_callback_query(world: TelegramWorld, params: Params) -> bool:
    text = params.get("text")
    if text is not None and len(str(text)) > 200:
        raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
    answered = world.answer_callback(
        str(params.get("callback_query_id", "")), text, bool(params.get("show_alert", False)), params.get("url")
    )
    if not answered:
        raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
    return True


def _send_chat_action(world: TelegramWorld, params: Params) -> bool:
    chat_id = _writable_chat(world, params)
    action = str(params.get("action", ""))
    if action not in _CHAT_ACTIONS:
        raise ApiError(400, "Bad Request: wrong parameter action in request")
    world.note_chat_action(chat_id, action)
    return True


_METHODS: dict[str, Handler] = {
    "getme": _get_me,
    "getupdates": _get_updates,
    "deletewebhook": _delete_webhook,
    "getwebhookinfo": _get_webhook_info,
    "setmycommands": _set_my_commands,
    "getmycommands": _get_my_commands,
    "deletemycommands": _delete_my_commands,
    "sendmessage": _send_message,
    "sendphoto": _send_photo,
    "editmessagetext": _edit_message_text,
    "editmessagecaption": _edit_message_caption,
    "editmessagereplymarkup": _edit_message_reply_markup,
    "deletemessage": _delete_message,
    "answercallbackquery": _answer_callback_query,
    "sendchataction": _send_chat_action,
}
