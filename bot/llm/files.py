"""Kimi's files API (``/v1/files``): upload a document, read its extracted text, delete it."""

from __future__ import annotations

import json
from typing import Any

from bot.errors import KimiModelNotFound
from bot.llm.transport import KimiRequest


class KimiFiles:
    """The files endpoints of one Kimi account."""

    def __init__(self, request: KimiRequest) -> None:
        self._request = request

    async def upload(self, filename: str, data: bytes, *, purpose: str = "file-extract") -> dict[str, Any]:
        """``POST /v1/files``: the FileObject (``id``, ``status`` "ok"/"ready" or "error")."""
        response = await self._request("POST", "files", files={"file": (filename, data)}, data={"purpose": purpose})
        body: dict[str, Any] = response.json()
        return body

    async def text(self, file_id: str) -> str:
        """``GET /v1/files/{id}/content``: the extracted text. Kimi answers with a JSON string in an
        "internally agreed format" (``{"content": ..., "filename": ...}``); plain text is taken as is."""
        response = await self._request("GET", f"files/{file_id}/content")
        try:
            body = json.loads(response.text)
        except ValueError:
            return response.text
        if isinstance(body, dict) and isinstance(body.get("content"), str):
            return str(body["content"])
        return response.text

    async def delete(self, file_id: str) -> None:
        """``DELETE /v1/files/{id}``; a file already gone is not an error."""
        try:
            await self._request("DELETE", f"files/{file_id}")
        except KimiModelNotFound:
            return

    async def uploaded(self) -> list[dict[str, Any]]:
        response = await self._request("GET", "files")
        data = response.json().get("data")
        return [f for f in data or [] if isinstance(f, dict)]
