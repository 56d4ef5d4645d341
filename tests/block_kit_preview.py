"""A small HTML preview of a Slack view's Block Kit blocks, for the tests' pictures: the block types
the App Home uses (header, section with text, fields and a button accessory, context, divider,
actions with buttons), mrkdwn's bold, italics, strike, code, quotes, links and mentions, and the
few emoji shortcodes the bot sends drawn as text stand-ins (the test machine has no emoji font).
It is a preview, not Slack: every text is escaped, and a block type it does not know is drawn as
a visible "unsupported" box so a picture never hides one silently."""

from __future__ import annotations

import html
import re
from typing import Any

#: Shortcode → (stand-in glyph, css class): drawn in a coloured chip.
EMOJI = {
    "warning": ("⚠", "warn"),
    "rotating_light": ("!", "alarm"),
    "+1": ("+1", "up"),
    "-1": ("−1", "down"),
    "white_check_mark": ("✓", "up"),
}
_TOKEN = re.compile(r"<([^<>]+)>")
_EMPHASIS = (
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"), "b"),
    (re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])"), "i"),
    (re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])"), "s"),
    (re.compile(r"`([^`\n]+)`"), "code"),
)
_HELD = re.compile(r"\x00(\d+)\x00")
_SHORTCODE = re.compile(r":([a-z0-9_+\-]+):")

STYLE = """
body { margin: 0; background: #fff; font: 15px/1.46 "Liberation Sans", "DejaVu Sans", sans-serif; color: #1d1c1d; }
main { width: 640px; padding: 20px 28px; }
.header { font-size: 18px; font-weight: 700; margin: 16px 0 6px; }
.section { display: flex; gap: 12px; align-items: flex-start; justify-content: space-between; margin: 8px 0; }
.section .text { white-space: pre-wrap; overflow-wrap: anywhere; }
.fields { display: grid; grid-template-columns: 1fr 1fr; gap: 4px 16px; }
.context { font-size: 12px; color: #616061; margin: 4px 0; }
hr { border: 0; border-top: 1px solid #dddddd; margin: 14px 0; }
blockquote { margin: 2px 0; padding-left: 10px; border-left: 4px solid #dddddd; color: #454245; }
.button { flex: none; font: 700 13px/1 inherit; padding: 8px 14px; border: 1px solid #bbbabb;
  border-radius: 4px; background: #fff; color: #1d1c1d; }
.button.primary { background: #007a5a; border-color: #007a5a; color: #fff; }
.button.danger { background: #e01e5a; border-color: #e01e5a; color: #fff; }
.actions { display: flex; gap: 8px; margin: 8px 0; }
.mention { background: #e8f5fa; color: #1264a3; border-radius: 3px; padding: 0 2px; }
a { color: #1264a3; text-decoration: none; }
code { font: 12px "DejaVu Sans Mono", monospace; background: #f6f6f6; border: 1px solid #ddd; padding: 0 3px; }
.emoji { display: inline-block; min-width: 1.2em; padding: 0 3px; border-radius: 9px; text-align: center;
  font-size: 12px; font-weight: 700; line-height: 18px; }
.emoji.warn { background: #fff1c2; color: #8a6100; }
.emoji.alarm { background: #e01e5a; color: #fff; }
.emoji.up { background: #dff3e8; color: #007a5a; }
.emoji.down { background: #fde3ea; color: #b0103e; }
.unsupported { border: 2px dashed #e01e5a; padding: 6px; color: #e01e5a; }
"""


def _emphasis(escaped: str) -> str:
    for pattern, tag in _EMPHASIS:
        escaped = pattern.sub(rf"<{tag}>\1</{tag}>", escaped)

    def emoji(match: re.Match[str]) -> str:
        known = EMOJI.get(match.group(1))
        if known is None:
            return match.group(0)
        glyph, css = known
        return f'<span class="emoji {css}" title=":{html.escape(match.group(1))}:">{html.escape(glyph)}</span>'

    return _SHORTCODE.sub(emoji, escaped)


def _plain(segment: str) -> str:
    """A run of mrkdwn text outside ``<…>`` tokens: Slack's three entities read, then escaped."""
    return html.escape(segment.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def _token(inner: str, names: dict[str, str]) -> str:
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        return f'<span class="mention">@{html.escape(label or names.get(target[1:], target[1:]))}</span>'
    if target.startswith("#"):
        return f'<span class="mention">#{html.escape(label or names.get(target[1:], target[1:]))}</span>'
    if target.startswith("!"):
        return f'<span class="mention">@{html.escape(label or target[1:].split("^")[0])}</span>'
    return f'<a href="{html.escape(target)}">{html.escape(label or target)}</a>'


def _line(line: str, names: dict[str, str]) -> str:
    tokens: list[str] = []

    def hold(match: re.Match[str]) -> str:
        tokens.append(_token(match.group(1), names))
        return f"\x00{len(tokens) - 1}\x00"

    marked = _emphasis(_plain(_TOKEN.sub(hold, line)))  # emphasis may wrap a mention: *<@U1>*
    return _HELD.sub(lambda m: tokens[int(m.group(1))], marked)


def mrkdwn(text: str, names: dict[str, str]) -> str:
    """Slack mrkdwn as HTML: a line starting with ``>`` is a quote; ``names`` are the people's and
    channels' names Slack would show for ``<@U…>`` and ``<#C…>``."""
    parts = []
    for line in text.split("\n"):
        if line.startswith(">"):
            parts.append(f"<blockquote>{_line(line[1:], names)}</blockquote>")
        else:
            parts.append(_line(line, names) + "\n")
    return "".join(parts).rstrip("\n")


def text_object(obj: dict[str, Any], names: dict[str, str]) -> str:
    if obj.get("type") == "mrkdwn":
        return mrkdwn(str(obj.get("text", "")), names)
    return html.escape(str(obj.get("text", "")))


def _button(element: dict[str, Any]) -> str:
    style = element.get("style", "")
    css = f"button {style}" if style in ("primary", "danger") else "button"
    action = html.escape(str(element.get("action_id", "")))
    value = html.escape(str(element.get("value", "")))
    label = html.escape(str(element.get("text", {}).get("text", "")))
    return f'<button class="{css}" data-action-id="{action}" data-value="{value}">{label}</button>'


def _element(element: dict[str, Any], names: dict[str, str]) -> str:
    if element.get("type") == "button":
        return _button(element)
    if element.get("type") in ("mrkdwn", "plain_text"):
        return f"<span>{text_object(element, names)}</span>"
    return f'<span class="unsupported">{html.escape(str(element.get("type")))}</span>'


def block(b: dict[str, Any], names: dict[str, str]) -> str:
    kind = b.get("type")
    if kind == "header":
        return f'<h2 class="header">{text_object(b["text"], names)}</h2>'
    if kind == "divider":
        return "<hr>"
    if kind == "context":
        return f'<div class="context">{" ".join(_element(e, names) for e in b.get("elements", []))}</div>'
    if kind == "actions":
        return f'<div class="actions">{"".join(_element(e, names) for e in b.get("elements", []))}</div>'
    if kind == "section":
        body = f'<div class="text">{text_object(b["text"], names)}</div>' if "text" in b else ""
        if b.get("fields"):
            fields = "".join(f"<div>{text_object(f, names)}</div>" for f in b["fields"])
            body += f'<div class="fields">{fields}</div>'
        accessory = _element(b["accessory"], names) if "accessory" in b else ""
        return f'<section class="section"><div>{body}</div>{accessory}</section>'
    return f'<div class="unsupported">unsupported block: {html.escape(str(kind))}</div>'


def preview(view: dict[str, Any], names: dict[str, str], title: str = "Home") -> str:
    """A whole HTML page previewing ``view``'s blocks (``names``: see :func:`mrkdwn`)."""
    blocks = "\n".join(block(b, names) for b in view.get("blocks", []))
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><main>\n{blocks}\n</main></body></html>"
    )
