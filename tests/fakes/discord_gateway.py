"""The Discord gateway on the fake's ``/gateway`` WebSocket: HELLO, heartbeats, IDENTIFY (token
and intents checked) and READY + GUILD_CREATE, RESUME of a known session, and the DISPATCHes the
fake sends."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from tests.fakes.discord_world import BOT_ID, BOT_USER, GUILD_ID, JSON, MESSAGE_CONTENT_INTENT, DiscordWorld

__all__ = ["DiscordGateway"]


@dataclass
class _Session:
    ws: web.WebSocketResponse
    session_id: str
    shard: list[int]
    seq: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class DiscordGateway:
    """The gateway sessions of one :class:`DiscordWorld`: a session stays known (resumable) after
    its socket closed."""

    def __init__(self, world: DiscordWorld) -> None:
        self.world = world
        self._sessions: list[_Session] = []

    @property
    def connected(self) -> bool:
        return any(not s.ws.closed for s in self._sessions)

    async def drop(self, code: int = 4000, reason: str = "Unknown error.") -> None:
        """Close every gateway session with ``code`` (4000 "unknown error" by default), as
        Discord does when something went wrong on its side."""
        for session in list(self._sessions):
            await session.ws.close(code=code, message=reason.encode())

    async def dispatch(self, event: str, data: JSON) -> None:
        """Send a DISPATCH (op 0) to every identified gateway session."""
        for session in list(self._sessions):
            if session.ws.closed:
                continue
            async with session.lock:
                session.seq += 1
                await session.ws.send_str(json.dumps({"op": 0, "s": session.seq, "t": event, "d": data}))

    async def close(self) -> None:
        for session in list(self._sessions):
            await session.ws.close()

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "s": None, "t": None, "d": {"heartbeat_interval": 41250}}))
        session: _Session | None = None
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            payload = json.loads(frame.data)
            op, data = payload.get("op"), payload.get("d")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11, "s": None, "t": None, "d": None}))
            elif op == 2:
                self.world.identifies.append(data)
                if data.get("token") != self.world.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                intents = int(data.get("intents", 0))
                if intents & MESSAGE_CONTENT_INTENT and not self.world.message_content_intent_enabled:
                    await ws.close(code=4014, message=b"Disallowed intent(s).")
                    break
                session = _Session(ws, f"session-{self.world.next_id()}", list(data.get("shard") or [0, 1]))
                await self._ready(session)
            elif op == 6:
                self.world.resumes.append(data)
                known = next((s for s in self._sessions if s.session_id == (data or {}).get("session_id")), None)
                if known is None:
                    await ws.send_str(json.dumps({"op": 9, "s": None, "t": None, "d": False}))
                    continue
                session = _Session(ws, known.session_id, known.shard, seq=known.seq)
                self._sessions = [s for s in self._sessions if s is not known]
                self._sessions.append(session)
                async with session.lock:
                    session.seq += 1
                    await ws.send_str(json.dumps({"op": 0, "s": session.seq, "t": "RESUMED", "d": {}}))
        # The session stays known after its socket closed, as Discord keeps it resumable: a
        # RESUME with its id continues it (dispatch skips closed sockets).
        return ws

    async def _ready(self, session: _Session) -> None:
        if self.world.ready_gate is not None:
            await self.world.ready_gate.wait()  # a slow start-up: READY only once the test opens the gate
        ready = {
            "v": 10,
            "user": {**BOT_USER.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": GUILD_ID, "unavailable": True}],
            "session_id": session.session_id,
            "resume_gateway_url": self.world.gateway_url,
            "shard": session.shard,
            "application": {"id": BOT_ID, "flags": 1 << 19},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "user_settings": {},
        }
        async with session.lock:
            for event, data in (("READY", ready), ("GUILD_CREATE", self._guild_create())):
                session.seq += 1
                await session.ws.send_str(json.dumps({"op": 0, "s": session.seq, "t": event, "d": data}))
        self._sessions.append(session)

    def _guild_create(self) -> JSON:
        threads = [
            c for c in self.world.channels.values() if c.get("type") == 11 and not c["thread_metadata"]["archived"]
        ]
        return {**self.world.guild, "threads": threads}
