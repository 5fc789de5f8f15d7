"""Client-side rate limits: requests and tokens per minute, shared by every call of a run.

One `RateLimiter` per run.  Each HTTP attempt calls `acquire(cost)` first and `settle(...)` with the
answer's headers after.  Two token buckets (requests, tokens) refill at limit/60 per second; waiters
queue in FIFO order behind one timer (no polling).  Limits come from settings, or are learnt from
`x-ratelimit-*` headers, whose `remaining-*` values also re-sync the buckets with the server's view.
A 429 pauses everyone for Retry-After, cuts the shared rate, which then recovers over RECOVER_S.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .tokens import TokenCounter

BURST_S = 1.0  # seconds of budget spent at once before the server has told us its bucket size
JITTER_S = 0.25  # budget kept in reserve: requests granted together may reach the server this far apart
CUT_UNKNOWN = 0.75  # rate factor applied on a 429 when no limit is known
CUT_KNOWN = 0.9  # ... when limits are known (the 429 says our estimate ran a little ahead)
MIN_FACTOR = 0.05
RECOVER_S = 30.0  # seconds to climb back from a cut to full speed
DEFAULT_PAUSE = 1.0  # pause after a 429 that gives no Retry-After and no reset time
RECENT_S = 10.0  # window for the observed send rate (learnt limit when nothing else is known)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|h|m|s)")


def parse_duration(text: object) -> float | None:
    """Seconds in a reset value like "1s", "6m0s", "20ms", "1h2m3.5s" or "0.5"; None if unreadable."""
    s = str(text).strip().lower()
    try:
        return max(0.0, float(s))
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total if pos and pos == len(s) else None


def _number(value: object) -> float | None:
    """A header value as a non-negative number, or None."""
    try:
        return max(0.0, float(str(value).strip()))
    except ValueError:
        return None


@dataclass(frozen=True)
class Snapshot:
    """What one answer's x-ratelimit-* headers said (None where a header is absent)."""

    limit_requests: float | None = None
    limit_tokens: float | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    reset_requests: float | None = None
    reset_tokens: float | None = None

    @classmethod
    def read(cls, headers: Mapping[str, Any] | None) -> Snapshot | None:
        """Parse the x-ratelimit-* headers (case-insensitive mappings or lower-case dicts)."""
        if not headers:
            return None
        get = headers.get
        snap = cls(
            _number(get("x-ratelimit-limit-requests", "x")), _number(get("x-ratelimit-limit-tokens", "x")),
            _number(get("x-ratelimit-remaining-requests", "x")), _number(get("x-ratelimit-remaining-tokens", "x")),
            parse_duration(get("x-ratelimit-reset-requests", "x")), parse_duration(get("x-ratelimit-reset-tokens", "x")),
        )
        return None if snap == _EMPTY else snap


_EMPTY = Snapshot()


@dataclass(frozen=True, slots=True)
class Ticket:
    """One granted acquire: when, its cost, and the buckets' running totals right after it."""

    seq: int
    cost: int
    requests_after: float
    tokens_after: float
    at: float


@dataclass
class LimiterStats:
    """What the limiter did during a run."""

    acquired: int = 0
    waited: int = 0
    wait_s: float = 0.0
    throttled: int = 0  # answers with status 429
    slowdowns: int = 0  # times the shared rate was cut


class Bucket:
    """One budget (requests or tokens): refills at per_minute/60 per second up to `capacity`."""

    def __init__(self, per_minute: float | None, now: float) -> None:
        self.per_minute = per_minute
        self.capacity = self._burst(per_minute)
        self.level = self.capacity
        self.stamp = now
        self.charged = 0.0  # every unit ever taken (to relate server snapshots to later sends)

    @staticmethod
    def _burst(per_minute: float | None) -> float:
        """Default capacity: BURST_S seconds of budget, at least one unit."""
        return max(1.0, (per_minute or 0.0) / 60.0 * BURST_S)

    def rate(self, factor: float) -> float:
        """Units per second at a rate factor."""
        return (self.per_minute or 0.0) / 60.0 * factor

    def refill(self, now: float, factor: float) -> None:
        """Add what flowed in since the last refill."""
        if self.per_minute and now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate(factor))
        self.stamp = now

    def wait_for(self, cost: float, factor: float) -> float:
        """Seconds until `cost` units (plus the jitter reserve) may be taken; a cost above capacity leaves a debt."""
        need = min(cost + self.rate(1.0) * JITTER_S, self.capacity)
        if self.per_minute is None or self.level >= need:
            return 0.0
        return (need - self.level) / self.rate(factor)

    def take(self, cost: float) -> None:
        """Spend units (the level may go below zero: a debt the refill pays back)."""
        self.level -= cost
        self.charged += cost

    def set_limit(self, per_minute: float) -> None:
        """Adopt a (new) per-minute limit, keeping a bucket size learnt from the server."""
        if per_minute == self.per_minute:
            return
        learnt = self.capacity if self.per_minute is not None else 0.0
        self.per_minute = per_minute
        self.capacity = max(self._burst(per_minute), min(learnt, per_minute))
        self.level = min(self.level if learnt else self.capacity, self.capacity)

    def sync(self, remaining: float, charged_then: float, refilled: float) -> None:
        """Trust the server's remaining budget, plus its refill and minus what we took since that request left."""
        if self.per_minute:
            self.capacity = max(self.capacity, min(remaining, self.per_minute))
        self.level = min(self.capacity, remaining + refilled) - (self.charged - charged_then)

    def drain(self) -> None:
        """Forget any budget left (the server said it is exhausted)."""
        self.level = min(self.level, 0.0)


class Estimator:
    """Prompt tokens of a request with tiktoken, each message text counted once per run."""

    MAX_MEMO = 20_000

    def __init__(self, counter: TokenCounter) -> None:
        self._counter = counter
        self._seeds: dict[str, int] = {}  # last-message counts taken from the request's own total

    def text(self, text: str) -> int:
        """Tokens of one message text: a seeded count, else the counter's memoised count."""
        n = self._seeds.get(text)
        return n if n is not None else self._counter.count_cached(text)

    def seed(self, messages: list[dict[str, str]], total: int) -> None:
        """Remember the last message's count from a total made with Counter.count_messages."""
        if not messages:
            return
        head = sum(self.text(m.get("content", "")) + 4 for m in messages[:-1])
        if len(self._seeds) >= self.MAX_MEMO:
            self._seeds.clear()
        self._seeds[messages[-1].get("content", "")] = max(0, total - 3 - head - 4)

    def prompt(self, messages: list[dict[str, str]]) -> int:
        """Prompt tokens, the way Counter.count_messages counts them."""
        return sum(self.text(m.get("content", "")) + 4 for m in messages) + 3


class RateLimiter:
    """Requests/min and tokens/min shared by every task of a run; learns limits and backs off on 429."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, estimator: Estimator | None = None) -> None:
        self.configured = (rpm, tpm)
        self.estimator = estimator
        self.stats = LimiterStats()
        self._requests = Bucket(rpm, 0.0)
        self._tokens = Bucket(tpm, 0.0)
        self._queue: deque[tuple[int, asyncio.Future[Ticket]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0
        self._paused_until = 0.0
        self._cut_factor, self._cut_at = 1.0, 0.0
        self._episode_seq, self._episode_at = -1, float("-inf")  # the last burst of 429s
        self._recent: deque[float] = deque()

    @property
    def limits(self) -> tuple[float | None, float | None]:
        """The requests/min and tokens/min in force (None = unknown, not limited)."""
        return self._requests.per_minute, self._tokens.per_minute

    @property
    def counts_tokens(self) -> bool:
        """Whether a tokens/min limit is known (configured or learnt): only then are prompts counted with tiktoken."""
        return self._tokens.per_minute is not None

    def cost(self, messages: list[dict[str, str]], max_tokens: int) -> int:
        """Tokens a request counts against the budget: prompt estimate plus max_tokens (a rough one with no limit)."""
        if self.estimator is not None and self.counts_tokens:
            return self.estimator.prompt(messages) + max_tokens
        return sum(len(m.get("content", "")) for m in messages) // 4 + 4 * len(messages) + 3 + max_tokens

    def factor(self, now: float) -> float:
        """The share of the limits in use: cut on a 429, back to 1.0 linearly over RECOVER_S."""
        if self._cut_factor >= 1.0:
            return 1.0
        f = self._cut_factor + (1.0 - self._cut_factor) * (now - self._cut_at) / RECOVER_S
        if f >= 1.0:
            self._cut_factor = 1.0
        return min(f, 1.0)

    async def acquire(self, cost: int) -> Ticket:
        """Wait (one timer, FIFO) until both budgets allow a request of `cost` tokens."""
        loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._queue and self._delay(now, cost) <= 0.0:
            return self._grant(cost, now)
        fut: asyncio.Future[Ticket] = loop.create_future()
        self._queue.append((cost, fut))
        self.stats.waited += 1
        if self._timer is None:
            self._arm(now)
        try:
            return await fut
        finally:
            self.stats.wait_s += loop.time() - now

    def settle(self, ticket: Ticket | None, headers: Mapping[str, Any] | None, status: int = 200,
               retry_after: float | None = None) -> None:
        """Learn from an answer: limits and remaining budget from headers; slow down on 429."""
        now = self._loop.time() if self._loop is not None else 0.0
        snap = Snapshot.read(headers)
        if snap is not None:
            self._learn(snap, ticket, now)
        if status == 429:
            self._throttled(ticket, snap, retry_after, now)
        if self._queue:
            self._rearm(now)

    def close(self) -> None:
        """Stop the timer (waiters are cancelled by their tasks)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------ internals

    def _delay(self, now: float, cost: int) -> float:
        """Seconds until a request of `cost` tokens may leave (<= 0: now)."""
        f = self.factor(now)
        self._requests.refill(now, f)
        self._tokens.refill(now, f)
        wait = max(self._paused_until - now, self._requests.wait_for(1, f), self._tokens.wait_for(cost, f))
        return wait if wait > 1e-6 else 0.0

    def _grant(self, cost: int, now: float) -> Ticket:
        """Spend the budgets for one request."""
        self._seq += 1
        self._requests.take(1)
        self._tokens.take(cost)
        self.stats.acquired += 1
        self._recent.append(now)
        while self._recent[0] < now - RECENT_S:
            self._recent.popleft()
        return Ticket(self._seq, cost, self._requests.charged, self._tokens.charged, now)

    def _pump(self) -> None:
        """Timer callback: release every waiter at the head of the queue that may go now."""
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        while self._queue:
            cost, fut = self._queue[0]
            if fut.done():
                self._queue.popleft()
                continue
            if self._delay(now, cost) > 0.0:
                break
            self._queue.popleft()
            fut.set_result(self._grant(cost, now))
        if self._queue:
            self._arm(now)

    def _arm(self, now: float) -> None:
        """Set the one timer for when the head of the queue may go."""
        while self._queue and self._queue[0][1].done():
            self._queue.popleft()
        if self._queue and self._loop is not None:
            self._timer = self._loop.call_at(now + max(0.0, self._delay(now, self._queue[0][0])), self._pump)

    def _rearm(self, now: float) -> None:
        """Re-plan the timer after the budgets changed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._arm(now)

    def _learn(self, snap: Snapshot, ticket: Ticket | None, now: float) -> None:
        """Adopt the server's limits (capped by configured ones) and re-sync with its remaining budget."""
        f = self.factor(now)
        pairs = (
            (self._requests, self.configured[0], snap.limit_requests, snap.remaining_requests,
             ticket.requests_after if ticket else None),
            (self._tokens, self.configured[1], snap.limit_tokens, snap.remaining_tokens,
             ticket.tokens_after if ticket else None),
        )
        for bucket, configured, limit, remaining, charged_then in pairs:
            if limit:
                bucket.set_limit(min(limit, configured) if configured else limit)
            server_governs = bucket.per_minute is not None and (not configured or (limit or 0) < configured)
            if remaining is not None and ticket is not None and charged_then is not None and server_governs:
                bucket.refill(now, f)  # the server counted at most from our send: credit its refill since
                bucket.sync(remaining, charged_then, (now - ticket.at) * bucket.rate(f))

    def _throttled(self, ticket: Ticket | None, snap: Snapshot | None, retry_after: float | None, now: float) -> None:
        """A 429: pause everyone and drain the budget; cut the rate once per episode (a lone one under known limits is forgiven)."""
        self.stats.throttled += 1
        pause = retry_after if retry_after is not None else _reset_of_exhausted(snap)
        self._paused_until = max(self._paused_until, now + min(60.0, DEFAULT_PAUSE if pause is None else pause))
        if snap is None or (snap.remaining_requests is None and snap.remaining_tokens is None):
            self._requests.drain()
            self._tokens.drain()
        if ticket is not None and ticket.seq <= self._episode_seq:
            return  # sent before this episode began: same episode
        lone = now - self._episode_at > RECOVER_S
        self._episode_seq, self._episode_at = self._seq, now
        cut = CUT_KNOWN
        if self._requests.per_minute is None and self._tokens.per_minute is None:
            self._requests.set_limit(self._observed_rpm(now))
            self._requests.drain()
            cut = CUT_UNKNOWN
        elif lone:
            return  # known limits, first 429 in a while: timing jitter; the pause and the drain are enough
        self._cut_factor, self._cut_at = max(MIN_FACTOR, self.factor(now) * cut), now
        self.stats.slowdowns += 1

    def _observed_rpm(self, now: float) -> float:
        """Requests per minute sent over the last RECENT_S seconds (at least 1)."""
        if not self._recent:
            return 1.0
        span = max(1.0, now - self._recent[0])
        return max(1.0, len(self._recent) / span * 60.0)


def _reset_of_exhausted(snap: Snapshot | None) -> float | None:
    """The reset time of the budget the server says is used up."""
    if snap is None:
        return None
    if snap.remaining_tokens is not None and snap.remaining_tokens < 1 and snap.reset_tokens is not None:
        return snap.reset_tokens
    if snap.remaining_requests is not None and snap.remaining_requests < 1:
        return snap.reset_requests
    return None
