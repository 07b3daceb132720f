"""Telegram's check of `parse_mode=HTML` texts, so the fake refuses what the real server refuses.

The classic bug this catches: user-controlled text (a coin symbol, an exchange error) interpolated into an
HTML message without escaping. Telegram answers `400 Bad Request: can't parse entities: ...` and the message
is lost; the fake answers the same.
"""

from __future__ import annotations

import html
import re

_SUPPORTED_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)
_TAG = re.compile(r"<(/?)([^\s>/]*)([^>]*)>")
_ANY_TAG = re.compile(r"<[^>]*>")


def html_parse_error(text: str) -> str | None:
    """Return Telegram's "can't parse entities" reason for an HTML text, or None when it is well formed."""
    open_tags: list[str] = []
    position = 0
    while (start := text.find("<", position)) != -1:
        offset = len(text[:start].encode())
        match = _TAG.match(text, start)
        if match is None:
            return f"Unclosed start tag at byte offset {offset}"
        closing, name, _attributes = match.groups()
        name = name.lower()
        if closing:
            if not open_tags:
                return f"Unexpected end tag at byte offset {offset}"
            if name != open_tags[-1]:
                return f'Unmatched end tag at byte offset {offset}, expected "</{open_tags[-1]}>", found "</{name}>"'
            open_tags.pop()
        elif name not in _SUPPORTED_TAGS:
            return f'Unsupported start tag "{name}" at byte offset {offset}'
        else:
            open_tags.append(name)
        position = match.end()
    if open_tags:
        return f'Can\'t find end tag corresponding to start tag "{open_tags[-1]}"'
    return None


def html_plain_text(text: str) -> str:
    """The text a user sees once Telegram has rendered the markup."""
    return html.unescape(_ANY_TAG.sub("", text))
