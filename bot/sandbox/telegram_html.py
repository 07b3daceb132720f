"""Telegram's handling of `parse_mode=HTML`: refuse what the real server refuses, render what it renders.

The classic bug this catches: user-controlled text (a coin symbol, an exchange error) interpolated into an
HTML message without escaping. Telegram answers `400 Bad Request: can't parse entities: ...` and the message
is lost; the fake answers the same. Accepted texts come back as Telegram returns them: plain text plus
entities (offsets in UTF-16 code units), so `Message.text_html` round-trips in PTB.
"""

from __future__ import annotations

import html
import re
from typing import Any

_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_TAG = re.compile(r"<(/?)([^\s>/]*)([^>]*)>")
_ATTRIBUTE = re.compile(r"""([\w-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?""")


class HtmlError(ValueError):
    """The text is not HTML Telegram accepts; the message is Telegram's reason."""


def render_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Return (plain text, entities) for an HTML text, or raise HtmlError with Telegram's reason."""
    plain: list[str] = []
    length = 0  # UTF-16 code units rendered so far
    open_tags: list[tuple[str, dict[str, str], int]] = []
    entities: list[dict[str, Any]] = []
    position = 0
    while True:
        start = text.find("<", position)
        chunk = html.unescape(text[position : start if start != -1 else len(text)])
        plain.append(chunk)
        length += _utf16_len(chunk)
        if start == -1:
            break
        offset = len(text[:start].encode())
        match = _TAG.match(text, start)
        if match is None:
            raise HtmlError(f"Unclosed start tag at byte offset {offset}")
        closing, name, attributes = match.groups()
        name = name.lower()
        if closing:
            if not open_tags:
                raise HtmlError(f"Unexpected end tag at byte offset {offset}")
            opened, attrs, begin = open_tags.pop()
            if name != opened:
                raise HtmlError(f'Unmatched end tag at byte offset {offset}, expected "</{opened}>", found "</{name}>"')
            if length > begin and not _duplicate_pre(opened, entities, begin, length - begin):
                entities.append(_entity(opened, attrs, begin, length - begin, open_tags))
        elif name not in _ENTITY_TYPES:
            raise HtmlError(f'Unsupported start tag "{name}" at byte offset {offset}')
        else:
            open_tags.append((name, _attributes(attributes), length))
        position = match.end()
    if open_tags:
        raise HtmlError(f'Can\'t find end tag corresponding to start tag "{open_tags[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(plain), entities


def _entity(
    tag: str, attrs: dict[str, str], offset: int, length: int, enclosing: list[tuple[str, dict[str, str], int]]
) -> dict[str, Any]:
    entity: dict[str, Any] = {"type": _ENTITY_TYPES[tag], "offset": offset, "length": length}
    if tag == "a":
        entity["url"] = attrs.get("href", "")
    elif tag == "tg-emoji":
        entity["custom_emoji_id"] = attrs.get("emoji-id", "")
    elif tag == "blockquote" and "expandable" in attrs:
        entity["type"] = "expandable_blockquote"
    elif tag == "code" and enclosing and enclosing[-1][0] == "pre":
        entity["type"] = "pre"  # <pre><code class="language-x"> is one pre entity with a language
        language = attrs.get("class", "").removeprefix("language-")
        if language:
            entity["language"] = language
    return entity


def _duplicate_pre(tag: str, entities: list[dict[str, Any]], offset: int, length: int) -> bool:
    """<pre><code>…</code></pre> already became one pre entity when the inner code closed."""
    last = entities[-1] if entities else {}
    return tag == "pre" and last.get("type") == "pre" and (last["offset"], last["length"]) == (offset, length)


def _attributes(raw: str) -> dict[str, str]:
    return {
        m.group(1).lower(): html.unescape(m.group(2) or m.group(3) or m.group(4) or "")
        for m in _ATTRIBUTE.finditer(raw)
    }


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2
