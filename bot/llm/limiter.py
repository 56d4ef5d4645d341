"""One limiter for the Kimi account: concurrency, requests and tokens per minute, a fair queue.

Moonshot limits an organisation, not a key, on four dimensions shared by every model
(concurrency, RPM, TPM, TPD), and it pre-charges TPM with the prompt plus ``max_tokens``. Every
caller of :class:`bot.kimi.KimiClient` (drafting, summaries, models, files) goes through the one
:class:`AccountLimiter` the client holds, so the account's limits are known in one place.

Fairness: callers queue by *tenant* (the conversation's customer, passed down from drafting) and
the turn goes round-robin across the tenants that wait: the head of the queue waits for a
concurrency slot and for room in both windows, then hands the turn to the next tenant's oldest
caller, not to whoever came next. A sender with 50 queued drafts holds one place in the rotation,
so another customer's single draft is served next and the heaviest sender never sets everyone's
latency. Within one tenant it is first come first served; callers without a tenant share one.

The minute windows are sliding logs of start times (and token charges): a request starts only when
fewer than ``rpm`` requests (and at most ``tpm`` tokens) started in the last ``window`` seconds plus
a small margin for the way to Kimi. That never exceeds the limit in *any* 60-second window, whatever
window Kimi counts in, and still lets a burst use the whole minute's allowance at once. A leaky
bucket (aiolimiter) does not fit here: sized to the RPM it lets a burst plus the drain through
(up to twice the RPM inside one window, which Kimi refuses); sized to be safe it spaces requests
evenly and the 80-question burst of the issue ends 15 % after the ideal schedule.

Several instances on one account: each takes its share (``KIMI_INSTANCES``) of the limits; see
:meth:`AccountLimiter.shared`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(slots=True)
class LimiterStats:
    """What the limiter saw: queue waits (seconds, one per request) and pauses Kimi asked for."""

    waits: list[float] = field(default_factory=list)
    pauses: int = 0
    peak_in_flight: int = 0

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile of the queue waits (0 when nothing waited)."""
        if not self.waits:
            return 0.0
        ordered = sorted(self.waits)
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index]


class AccountLimiter:
    """Admits Kimi requests under the account's concurrency, RPM and TPM, round-robin by tenant."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        rpm: int,
        tpm: int,
        window: float = 60.0,
        margin: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency < 1 or rpm < 1 or tpm < 1:
            raise ValueError("the limits must be at least 1")
        self.max_concurrency = max_concurrency
        self.rpm = rpm
        self.tpm = tpm
        self.window = window
        self.margin = margin
        self._clock = clock
        self._turns: dict[str, deque[asyncio.Future[None]]] = {}  # tenants in rotation order
        self._head: str | None = None  # the tenant whose caller has the turn, None when free
        self._slots = asyncio.Semaphore(max_concurrency)
        self._starts: deque[float] = deque()
        self._charges: deque[tuple[float, int]] = deque()
        self._tokens = 0
        self._paused_until = 0.0
        self._in_flight = 0
        self._waiting = 0
        self.stats = LimiterStats()

    @classmethod
    def shared(
        cls, *, max_concurrency: int, rpm: int, tpm: int, instances: int = 1, window: float = 60.0
    ) -> AccountLimiter:
        """This instance's share when ``instances`` processes use one account: each takes an
        equal part of every limit (at least 1). A share needs no coordination, works on SQLite and
        PostgreSQL alike and adds no database round trip to a model call; what it costs is that an
        idle instance's share is not lent to a busy one."""
        n = max(1, instances)
        return cls(
            max_concurrency=max(1, max_concurrency // n),
            rpm=max(1, rpm // n),
            tpm=max(1, tpm // n),
            window=window,
        )

    @property
    def queued(self) -> int:
        """Requests waiting for their turn (the head of the queue included)."""
        return self._waiting

    @property
    def tokens_in_window(self) -> int:
        """Tokens charged by the requests started in the current window."""
        self._expire(self._clock())
        return self._tokens

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def pause(self, seconds: float) -> None:
        """Hold every new request for ``seconds`` (Kimi said "try again after N seconds")."""
        self.stats.pauses += 1
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    @asynccontextmanager
    async def slot(self, tokens: int, *, tenant: str = "") -> AsyncIterator[None]:
        """Wait for the turn of a request that charges ``tokens`` (prompt estimate + max_tokens),
        in ``tenant``'s place of the round-robin."""
        queued_at = self._clock()
        self._waiting += 1
        try:
            await self._take_turn(tenant)
            try:
                await self._slots.acquire()
                try:
                    await self._wait_for_room(tokens)
                except BaseException:
                    self._slots.release()
                    raise
                now = self._clock()
                self._starts.append(now)
                self._charges.append((now, tokens))
                self._tokens += tokens
            finally:
                self._pass_turn(tenant)
        finally:
            self._waiting -= 1
        self.stats.waits.append(now - queued_at)
        self._in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= 1
            self._slots.release()

    async def _take_turn(self, tenant: str) -> None:
        if self._head is None and not self._turns:
            self._head = tenant
            return
        turn = asyncio.get_running_loop().create_future()
        self._turns.setdefault(tenant, deque()).append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._pass_turn(tenant)  # handed the turn, then cancelled: hand it on
            else:
                waiting = self._turns.get(tenant)
                if waiting is not None and turn in waiting:
                    waiting.remove(turn)
                    if not waiting:
                        del self._turns[tenant]
            raise

    def _pass_turn(self, previous: str) -> None:
        """Give the turn to the oldest caller of the next tenant in the rotation (another tenant
        than ``previous`` when one waits); the served tenant goes to the back of the rotation."""
        while self._turns:
            tenant = next((t for t in self._turns if t != previous), previous)
            waiting = self._turns.pop(tenant, None)
            if not waiting:
                continue
            turn = waiting.popleft()
            if waiting:
                self._turns[tenant] = waiting
            if not turn.done():
                self._head = tenant
                turn.set_result(None)
                return
        self._head = None

    def _expire(self, now: float) -> None:
        horizon = now - self.window - self.margin
        while self._starts and self._starts[0] <= horizon:
            self._starts.popleft()
        while self._charges and self._charges[0][0] <= horizon:
            self._tokens -= self._charges.popleft()[1]

    async def _wait_for_room(self, tokens: int) -> None:
        while True:
            now = self._clock()
            self._expire(now)
            span = self.window + self.margin
            if self._paused_until > now:
                delay = self._paused_until - now
            elif len(self._starts) >= self.rpm:
                delay = self._starts[0] + span - now
            elif self._charges and self._tokens + tokens > self.tpm:
                delay = self._charges[0][0] + span - now  # one request above the TPM goes alone
            else:
                return
            await asyncio.sleep(max(delay, 0.001))
