"""Slack's Block Kit and view checks, with the limits of reference ``slack.md`` §4.3: the messages
Slack answers with ``invalid_blocks`` / ``invalid_arguments`` (``[ERROR] ... [json-pointer:...]``)."""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["blocks_text_length", "validate_blocks", "validate_view"]

JSON: TypeAlias = dict[str, Any]

_BLOCK_TYPES = {
    "actions",
    "call",
    "context",
    "context_actions",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "table",
    "video",
}
_ELEMENT_TYPES = {
    "button",
    "channels_select",
    "checkboxes",
    "conversations_select",
    "datepicker",
    "datetimepicker",
    "email_text_input",
    "external_select",
    "feedback_buttons",
    "file_input",
    "icon_button",
    "image",
    "multi_channels_select",
    "multi_conversations_select",
    "multi_external_select",
    "multi_static_select",
    "multi_users_select",
    "number_input",
    "overflow",
    "plain_text_input",
    "radio_buttons",
    "rich_text_input",
    "static_select",
    "timepicker",
    "url_text_input",
    "users_select",
    "workflow_button",
}


def _text_object(obj: Any, ptr: str, max_len: int, errs: list[str], plain_only: bool = False) -> None:
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in allowed or not isinstance(obj.get("text"), str):
        errs.append(f"[ERROR] must provide an object with type {' or '.join(allowed)} [json-pointer:{ptr}]")
        return
    text = obj["text"]
    if not text:
        errs.append(f"[ERROR] must be more than 0 characters [json-pointer:{ptr}/text]")
    elif len(text) > max_len:
        errs.append(f"[ERROR] must be less than {max_len + 1} characters [json-pointer:{ptr}/text]")


def _max_len(obj: JSON, key: str, max_len: int, ptr: str, errs: list[str]) -> None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > max_len):
        errs.append(f"[ERROR] must be less than {max_len + 1} characters [json-pointer:{ptr}/{key}]")


def _confirm(obj: Any, ptr: str, errs: list[str]) -> None:
    if obj is None:
        return
    if not isinstance(obj, dict):
        errs.append(f"[ERROR] must be an object [json-pointer:{ptr}]")
        return
    for key, limit in (("title", 100), ("text", 300), ("confirm", 30), ("deny", 30)):
        if key in obj:
            _text_object(obj[key], f"{ptr}/{key}", limit, errs, plain_only=key != "text")
        elif key != "deny":
            errs.append(f"[ERROR] missing required field: {key} [json-pointer:{ptr}]")


def _element(el: Any, ptr: str, errs: list[str]) -> None:
    if not isinstance(el, dict) or el.get("type") not in _ELEMENT_TYPES:
        errs.append(f"[ERROR] failed to match all allowed schemas [json-pointer:{ptr}]")
        return
    _max_len(el, "action_id", 255, ptr, errs)
    kind = el["type"]
    if kind == "button":
        _text_object(el.get("text"), f"{ptr}/text", 75, errs, plain_only=True)
        _max_len(el, "value", 2000, ptr, errs)
        _max_len(el, "url", 3000, ptr, errs)
        if el.get("style") not in (None, "primary", "danger"):
            errs.append(f"[ERROR] must be one of primary, danger [json-pointer:{ptr}/style]")
        _confirm(el.get("confirm"), f"{ptr}/confirm", errs)
    elif kind == "plain_text_input":
        max_length = el.get("max_length")
        if max_length is not None and (not isinstance(max_length, int) or not 1 <= max_length <= 3000):
            errs.append(f"[ERROR] must be between 1 and 3000 [json-pointer:{ptr}/max_length]")
            max_length = None
        min_length = el.get("min_length")
        if min_length is not None and (not isinstance(min_length, int) or not 0 <= min_length <= 3000):
            errs.append(f"[ERROR] must be between 0 and 3000 [json-pointer:{ptr}/min_length]")
        _max_len(el, "initial_value", max_length or 3000, ptr, errs)
        if "placeholder" in el:
            _text_object(el["placeholder"], f"{ptr}/placeholder", 150, errs, plain_only=True)
    elif kind in ("static_select", "multi_static_select", "overflow", "radio_buttons", "checkboxes"):
        options = el.get("options")
        if options is not None:
            if not isinstance(options, list) or len(options) > 100:
                errs.append(f"[ERROR] no more than 100 items allowed [json-pointer:{ptr}/options]")
            else:
                for i, option in enumerate(options):
                    if not isinstance(option, dict):
                        errs.append(f"[ERROR] must be an object [json-pointer:{ptr}/options/{i}]")
                        continue
                    _text_object(option.get("text"), f"{ptr}/options/{i}/text", 75, errs)
                    _max_len(option, "value", 150, f"{ptr}/options/{i}", errs)


def validate_blocks(blocks: Any, ptr: str = "/blocks", max_blocks: int = 50) -> list[str]:
    """Slack-style ``[ERROR] ... [json-pointer:...]`` messages for invalid Block Kit (empty if valid)."""
    errs: list[str] = []
    if not isinstance(blocks, list):
        return [f"[ERROR] must be an array [json-pointer:{ptr}]"]
    if len(blocks) > max_blocks:
        errs.append(f"[ERROR] no more than {max_blocks} items allowed [json-pointer:{ptr}]")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        bp = f"{ptr}/{i}"
        if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
            errs.append(f"[ERROR] failed to match all allowed schemas [json-pointer:{bp}]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not block_id or len(block_id) > 255:
                errs.append(f"[ERROR] must be less than 256 characters [json-pointer:{bp}/block_id]")
            elif block_id in block_ids:
                errs.append(f"[ERROR] duplicate block_id: {block_id} [json-pointer:{bp}/block_id]")
            else:
                block_ids.add(block_id)
        kind = block["type"]
        if kind == "section":
            if "text" not in block and "fields" not in block:
                errs.append(f"[ERROR] must provide text or fields [json-pointer:{bp}]")
            if "text" in block:
                _text_object(block["text"], f"{bp}/text", 3000, errs)
            fields = block.get("fields")
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > 10:
                    errs.append(f"[ERROR] no more than 10 items allowed [json-pointer:{bp}/fields]")
                else:
                    for j, item in enumerate(fields):
                        _text_object(item, f"{bp}/fields/{j}", 2000, errs)
            if "accessory" in block:
                _element(block["accessory"], f"{bp}/accessory", errs)
        elif kind == "header":
            _text_object(block.get("text"), f"{bp}/text", 150, errs, plain_only=True)
        elif kind == "markdown":
            text = block.get("text")
            if not isinstance(text, str) or not text or len(text) > 12000:
                errs.append(f"[ERROR] must be between 1 and 12000 characters [json-pointer:{bp}/text]")
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                errs.append(f"[ERROR] must have between 1 and 25 items [json-pointer:{bp}/elements]")
                continue
            action_ids: set[str] = set()
            for j, el in enumerate(elements):
                _element(el, f"{bp}/elements/{j}", errs)
                action_id = el.get("action_id") if isinstance(el, dict) else None
                if isinstance(action_id, str):
                    if action_id in action_ids:
                        errs.append(f"[ERROR] duplicate action_id: {action_id} [json-pointer:{bp}/elements/{j}]")
                    action_ids.add(action_id)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                errs.append(f"[ERROR] must have between 1 and 10 items [json-pointer:{bp}/elements]")
                continue
            for j, el in enumerate(elements):
                if isinstance(el, dict) and el.get("type") == "image":
                    continue
                _text_object(el, f"{bp}/elements/{j}", 3000, errs)
        elif kind == "input":
            _text_object(block.get("label"), f"{bp}/label", 2000, errs, plain_only=True)
            if "element" not in block:
                errs.append(f"[ERROR] missing required field: element [json-pointer:{bp}]")
            else:
                _element(block["element"], f"{bp}/element", errs)
            if "hint" in block:
                _text_object(block["hint"], f"{bp}/hint", 2000, errs, plain_only=True)
        elif kind == "image":
            _max_len(block, "image_url", 3000, bp, errs)
            alt = block.get("alt_text")
            if not isinstance(alt, str) or not alt or len(alt) > 2000:
                errs.append(f"[ERROR] must be between 1 and 2000 characters [json-pointer:{bp}/alt_text]")
    return errs


def validate_view(view: Any) -> list[str]:
    """Slack-style messages for an invalid modal/home view (empty if valid)."""
    if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
        return ["[ERROR] must be a view object with type modal or home [json-pointer:/view]"]
    errs: list[str] = []
    if view["type"] == "modal":
        if "title" not in view:
            errs.append("[ERROR] missing required field: title [json-pointer:/view]")
        else:
            _text_object(view["title"], "/view/title", 24, errs, plain_only=True)
    for key in ("submit", "close"):
        if view.get(key) is not None:
            _text_object(view[key], f"/view/{key}", 24, errs, plain_only=True)
    _max_len(view, "private_metadata", 3000, "/view", errs)
    _max_len(view, "callback_id", 255, "/view", errs)
    _max_len(view, "external_id", 255, "/view", errs)
    blocks = view.get("blocks")
    if blocks is None:
        errs.append("[ERROR] missing required field: blocks [json-pointer:/view]")
    else:
        errs.extend(validate_blocks(blocks, "/view/blocks", max_blocks=100))
        if (
            view["type"] == "modal"
            and isinstance(blocks, list)
            and any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
            and view.get("submit") is None
        ):
            errs.append("[ERROR] submit is required when the view has input blocks [json-pointer:/view/submit]")
    return errs


def blocks_text_length(value: Any) -> int:
    if isinstance(value, dict):
        total = len(value["text"]) if isinstance(value.get("text"), str) else 0
        return total + sum(blocks_text_length(v) for k, v in value.items() if k != "text")
    if isinstance(value, list):
        return sum(blocks_text_length(v) for v in value)
    return 0
