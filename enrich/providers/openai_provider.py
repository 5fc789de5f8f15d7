"""OpenAI-compatible chat provider: structured-output fallback and tenacity retries."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from enrich.errors import ContextOverflow, ProviderRejected, TransportError
from enrich.providers.base import Completion, Message
from enrich.providers.posters import make_poster, resolve_kind
from enrich.providers.wire import HTTPFailure
from enrich.ratelimit import RateLimiter

MODES = ("json_schema", "json_object", "text")
DUMMY_KEY = "not-needed"
Wait = Callable[[RetryCallState], float]
Sleep = Callable[[float], Awaitable[None]]

_REFUSAL_WORDS = ("response_format", "json_schema", "json_object", "not supported", "unsupported")
_OVERFLOW_WORDS = ("context_length_exceeded", "maximum context length", "context window", "too many tokens")
_STRICT_UNSUPPORTED = ("minLength", "maxLength")
_HINTS = {
    401: "check the API key: set OPENAI_API_KEY or the variable named by --api-key-env",
    403: "check the API key: set OPENAI_API_KEY or the variable named by --api-key-env",
    404: "check --model and --base-url",
}


class _ModeRefused(ProviderRejected):
    """The server does not accept this way of asking for structured output."""


class _ParamRefused(ProviderRejected):
    """The model does not accept a sampling parameter (reasoning models: max_tokens, temperature)."""

    def __init__(self, message: str, *, param: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.param = param


_ADAPTABLE = ("max_tokens", "temperature")


def _refused_param(exc: HTTPFailure) -> str | None:
    """max_tokens or temperature when a 400 says the model does not support it."""
    if exc.status != 400:
        return None
    if exc.param in _ADAPTABLE:
        return exc.param
    text = exc.message.lower()
    return next((p for p in _ADAPTABLE if f"'{p}'" in text and "unsupported" in text), None)


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: 429, 5xx, timeouts, connection errors."""
    if not isinstance(exc, HTTPFailure):
        return False
    return exc.status is None or exc.status == 429 or exc.status >= 500


def retry_after_seconds(headers: Any) -> float | None:
    """Read retry-after-ms, then Retry-After (seconds or HTTP date); None if absent."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    try:
        if raw_ms is not None:
            return max(0.0, float(raw_ms) / 1000)
    except ValueError:
        pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def strict_schema(node: Any, memo: dict[int, tuple[Any, Any]] | None = None) -> Any:
    """Copy a schema without keywords OpenAI strict mode rejects (pydantic checks them).

    With a memo, a part seen before (the same object: specs share all but their `related` part) is not copied again.
    """
    if memo is not None and isinstance(node, (dict, list)):
        hit = memo.get(id(node))
        if hit is not None and hit[0] is node:  # the memo holds the node, so its id is not reused
            return hit[1]
    if isinstance(node, dict):
        out: Any = {k: strict_schema(v, memo) for k, v in node.items() if k not in _STRICT_UNSUPPORTED}
    elif isinstance(node, list):
        out = [strict_schema(v, memo) for v in node]
    else:
        return node
    if memo is not None:
        memo[id(node)] = (node, out)
    return out


def with_schema_in_system(messages: list[Message], schema: dict[str, Any]) -> list[Message]:
    """Return a copy of messages whose system message ends with the JSON schema."""
    note = (
        "Reply with only one JSON object (no prose, no code fences) that matches this JSON schema:\n"
        + json.dumps(schema, ensure_ascii=False)
    )
    out = [dict(m) for m in messages]
    for msg in out:
        if msg.get("role") == "system":
            msg["content"] = f"{msg.get('content', '')}\n\n{note}"
            return out
    return [{"role": "system", "content": note}, *out]


def _refuses_format(exc: HTTPFailure, detail: str) -> bool:
    """True if a 400/422 says the server cannot do this response_format."""
    status = exc.status
    if exc.param and "response_format" not in exc.param:
        return False  # e.g. "Unsupported parameter: 'temperature'"
    return status == 422 or (status == 400 and any(w in detail.lower() for w in _REFUSAL_WORDS))


def _status_text(exc: HTTPFailure) -> str:
    """Short description of a failure for messages (never includes the key)."""
    return exc.message if exc.status is None else f"HTTP {exc.status}"


class OpenAIProvider:
    """The Provider protocol over any OpenAI-compatible /v1/chat/completions server."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None,
        api_key: str | None,
        timeout: float = 60,
        max_attempts: int = 6,
        backoff_max: float = 30,
        temperature: float = 0.2,
        *,
        wait: Wait | None = None,
        sleep: Sleep | None = None,
        limiter: RateLimiter | None = None,
        http_client: str = "auto",
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff_max = backoff_max
        self.temperature = temperature
        self.rate_limit_headers: dict[str, str] = {}
        self.limiter = limiter  # shared by every call of a run; every HTTP attempt acquires from it
        self._mode_index = 0
        self._token_param = "max_tokens"  # becomes max_completion_tokens for models that refuse max_tokens
        self._send_temperature = True  # reasoning models accept only their default temperature
        self._strict_memo: dict[int, tuple[Any, Any]] = {}
        self._secret = api_key or ""
        self._wait: Wait = wait or self.default_wait
        self._sleep: Sleep = sleep or asyncio.sleep
        self.http_client = resolve_kind(http_client, base_url)
        self._poster = make_poster(self.http_client, base_url, api_key or DUMMY_KEY, timeout)

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self.model!r}, base_url={self.base_url!r})"

    def _strict(self, schema: dict[str, Any]) -> Any:
        """strict_schema(schema); parts shared with earlier schemas, and whole schemas seen before, are not copied again."""
        if len(self._strict_memo) > 4096:
            self._strict_memo.clear()
        return strict_schema(schema, self._strict_memo)

    @property
    def mode(self) -> str:
        """The structured-output mode the next call will try first."""
        return MODES[self._mode_index]

    def default_wait(self, state: RetryCallState) -> float:
        """Honour Retry-After on a 429 (capped), else exponential backoff with jitter."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, HTTPFailure) and exc.status == 429:
            hinted = retry_after_seconds(exc.headers)
            if hinted is not None:
                return min(hinted, self.backoff_max)
        return float(wait_random_exponential(multiplier=0.5, max=self.backoff_max)(state))

    async def complete(
        self, messages: list[Message], schema: dict[str, Any], *, max_tokens: int
    ) -> Completion:
        """Ask for JSON, trying json_schema, json_object then plain text; remember what works."""
        while True:
            mode = MODES[self._mode_index]
            try:
                response = await self._create(self._request(messages, schema, mode, max_tokens))
            except _ModeRefused:
                if self._mode_index == len(MODES) - 1:
                    raise
                self._mode_index = max(self._mode_index, MODES.index(mode) + 1)
                continue
            except _ParamRefused as exc:
                if not self._adapt(exc.param):
                    raise
                continue
            return self._completion(response, mode)

    def _adapt(self, param: str) -> bool:
        """Stop sending a refused parameter the way it was sent; False when that was already done."""
        if param == "max_tokens" and self._token_param == "max_tokens":
            self._token_param = "max_completion_tokens"
            return True
        if param == "temperature" and self._send_temperature:
            self._send_temperature = False
            return True
        return False

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._poster.aclose()

    def request_body(self, messages: list[Message], schema: dict[str, Any], *, max_tokens: int) -> dict[str, Any]:
        """The /v1/chat/completions body `complete` would send first (used for Batch API lines)."""
        return self._request(messages, schema, self.mode, max_tokens)

    def _request(
        self, messages: list[Message], schema: dict[str, Any], mode: str, max_tokens: int
    ) -> dict[str, Any]:
        """Build the create() keyword arguments for one mode."""
        kwargs: dict[str, Any] = {"model": self.model, self._token_param: max_tokens}
        if self._send_temperature:
            kwargs["temperature"] = self.temperature
        if mode == "json_schema":
            kwargs["messages"] = [dict(m) for m in messages]
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "enrichment", "strict": True, "schema": self._strict(schema)},
            }
        else:
            kwargs["messages"] = with_schema_in_system(messages, schema)
            if mode == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
        return kwargs

    async def _create(self, kwargs: dict[str, Any]) -> Any:
        """Send one request, retried under tenacity on transient failures; map failures to EnrichError subclasses.

        The first attempt is made before tenacity is set up (most calls need no other; this saves ~20 us each).
        A transient failure of it becomes tenacity's first attempt, so waits, stops and counts are tenacity's.
        """
        try:
            return await self._send(kwargs)
        except HTTPFailure as exc:
            if not is_transient(exc) or self.max_attempts <= 1:
                raise self._map_error(exc, kwargs, 1) from exc
            first: list[HTTPFailure] = [exc]
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(is_transient),
            reraise=True,
            sleep=self._sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if first:
                        raise first.pop()  # the attempt already made
                    return await self._send(kwargs)
        except HTTPFailure as exc:
            raise self._map_error(exc, kwargs, retrying.statistics.get("attempt_number", 1)) from exc
        raise TransportError("retry loop ended without a result")  # pragma: no cover

    async def _send(self, kwargs: dict[str, Any]) -> Any:
        """One HTTP request under the rate limiter; remembers the x-ratelimit-* headers of every answer.

        Every HTTP path raises HTTPFailure, so retries and error mapping are the same for all of them.
        """
        limiter = self.limiter
        ticket = await limiter.acquire(limiter.cost(kwargs["messages"], kwargs[self._token_param])) if limiter else None
        try:
            headers, body = await self._poster.post(kwargs)
        except HTTPFailure as exc:
            self._remember(exc.headers)
            if limiter is not None and exc.status is not None:
                limiter.settle(ticket, exc.headers, exc.status, retry_after_seconds(exc.headers))
            raise
        self._remember(headers)
        if limiter is not None:
            limiter.settle(ticket, headers)
        return body

    def _remember(self, headers: Any) -> None:
        """Keep the last x-ratelimit-* headers seen."""
        found = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}
        if found:
            self.rate_limit_headers = found

    def _map_error(self, exc: HTTPFailure, kwargs: dict[str, Any], attempts: int) -> Exception:
        """Turn a failed request into TransportError, ContextOverflow or ProviderRejected."""
        if is_transient(exc):
            return TransportError(
                f"{self.model}: gave up after {attempts} attempt(s): {_status_text(exc)}",
                hint="the server is unreachable, overloaded or rate limiting; try again later or lower --concurrency",
            )
        status = exc.status
        detail = self._redact(f"{exc.message} {exc.body or ''}")
        message = f"{self.model}: request rejected ({_status_text(exc)}): {self._redact(exc.message)[:300]}"
        if status in (400, 413) and any(w in detail.lower() for w in _OVERFLOW_WORDS):
            return ContextOverflow(message, hint="the note is too long for this model's context window")
        if "response_format" in kwargs and _refuses_format(exc, detail):
            return _ModeRefused(message, status=status)
        refused = _refused_param(exc)
        if refused is not None:
            return _ParamRefused(message, param=refused, status=status)
        return ProviderRejected(message, status=status, hint=_HINTS.get(status or 0))

    def _redact(self, text: str) -> str:
        """Remove the API key from text a server echoed back."""
        return text.replace(self._secret, "***") if len(self._secret) >= 8 else text

    def _completion(self, response: Any, mode: str) -> Completion:
        """Build a Completion from a chat.completion JSON body."""
        if not isinstance(response, dict):
            raise ProviderRejected(f"{self.model}: the server's answer is not a chat completion (JSON object)")
        choices = response.get("choices") or [{}]
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message") or {}
        usage = response.get("usage") or {}
        return Completion(
            text=message.get("content") or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
            model=response.get("model") or self.model,
            mode=mode,
        )
