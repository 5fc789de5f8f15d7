"""A fake OpenAI-compatible HTTP server for tests: scripted replies, recorded requests.

Usage::

    with FakeOpenAI() as srv:                # or the `fake_openai` fixture
        srv.push(rate_limited(2), answer())  # one step per chat request, in order
        ... OpenAI(base_url=srv.url) ...
        srv.requests[0].json["response_format"]

A step is a `Reply` or a callable(request_json) -> Reply; with an empty script
`srv.default` answers (a valid enrichment for the request's schema).  Endpoints live in
`srv.routes` by (method, path); a path may hold `{name}` segments (see `Recorded.params`).
`srv.latency` adds seconds to every chat answer.  fakeserver_limits.py adds RPM/TPM
enforcement (429 + Retry-After, x-ratelimit-* headers) and the Files/Batch API.
"""

from __future__ import annotations

import json
import re
import ssl
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

MODEL = "fake-model"


@dataclass
class Reply:
    """One HTTP answer; `body` is JSON-encoded unless it is str/bytes."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    raw: bytes = b""
    params: dict[str, str] = field(default_factory=dict)


Step = Reply | Callable[[Any], Reply]
Route = Callable[[Recorded], Reply]

def completion_body(content: str | None, finish_reason: str = "stop", model: str = MODEL) -> dict[str, Any]:
    """Return a chat.completion body the real openai SDK accepts (50 prompt tokens)."""
    used = max(1, len(content or "") // 4)
    return {
        "id": f"chatcmpl-fake{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 50, "completion_tokens": used, "total_tokens": 50 + used},
    }


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """Return an OpenAI-style error body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def valid_enrichment(candidates: list[str] | None = None) -> dict[str, Any]:
    """Return an enrichment that passes validation, relating to up to 2 candidates."""
    return {
        "key_points": [
            "The note explains why small experiments beat long plans.",
            "Feedback loops are shortened by shipping tiny increments.",
            "Reviewing results weekly keeps the project honest.",
        ],
        "tags": ["experiments", "feedback-loops"],
        "related": list(candidates or [])[:2],
    }


_RELATED_RE = re.compile(r'"related":\s*\{.*?"items":\s*\{([^{}]*)\}', re.DOTALL)


def candidates_of(request: Any) -> list[str]:
    """Find the allowed related ids in the request's schema (response_format or prompt)."""
    fmt = (request or {}).get("response_format") or {}
    text = json.dumps(fmt.get("json_schema", {}).get("schema", {}))
    if '"related"' not in text:
        text = " ".join(str(m.get("content", "")) for m in request.get("messages", []))
    match = _RELATED_RE.search(text)
    if not match:
        return []
    items = json.loads("{" + match.group(1) + "}")
    ids = items.get("enum") or ([items["const"]] if "const" in items else [])
    return [i for i in ids if i != "__none__"]


def content(text: str | None, finish_reason: str = "stop", headers: dict[str, str] | None = None) -> Reply:
    """Reply with arbitrary assistant content."""
    return Reply(200, completion_body(text, finish_reason), dict(headers or {}))


def answer(data: dict[str, Any] | None = None) -> Step:
    """Reply with a JSON answer (default: valid for the request's candidates)."""
    if data is not None:
        return content(json.dumps(data))
    return lambda req: content(json.dumps(valid_enrichment(candidates_of(req))))


def invalid(text: str = "Sure! Here are some thoughts about your note.") -> Reply:
    """Reply with content that contains no JSON object."""
    return content(text)


def truncated(data: dict[str, Any] | None = None, finish_reason: str = "stop") -> Reply:
    """Reply with JSON cut in half."""
    text = json.dumps(data or valid_enrichment())
    return content(text[: len(text) // 2], finish_reason)


def length(data: dict[str, Any] | None = None) -> Reply:
    """Reply with cut JSON and finish_reason "length"."""
    return truncated(data, "length")


def error(
    status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
    headers: dict[str, str] | None = None, param: str | None = None,
) -> Reply:
    """Reply with an OpenAI-style error."""
    return Reply(status, error_body(message, type_, code, param), dict(headers or {}))


def rate_limited(retry_after: float | str | None = 1, retry_after_ms: float | None = None) -> Reply:
    """Reply 429, with Retry-After (seconds or HTTP date) and/or retry-after-ms."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    return error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded", headers)


def server_error(status: int = 500) -> Reply:
    """Reply with a 5xx error."""
    return error(status, "The server had an error while processing your request.", "server_error")


def refusal_400(kind: str = "json_schema") -> Reply:
    """The 400 a server sends when a response_format type is not supported."""
    msg = f"Invalid parameter: 'response_format' of type '{kind}' is not supported with this model."
    return Reply(400, error_body(msg, param="response_format"))


def refuse_json_schema(then: Step | None = None) -> Step:
    """One step: 400 if the request asks for json_schema, else `then` (default answer)."""
    def step(req: Any) -> Reply:
        if ((req or {}).get("response_format") or {}).get("type") == "json_schema":
            return refusal_400()
        return resolve(then or answer(), req)
    return step


def delayed(seconds: float, then: Step | None = None) -> Step:
    """One step: answer like `then` (default answer) after `seconds` of latency."""
    return lambda req: replace(resolve(then or answer(), req), delay=seconds)


def resolve(step: Step, req: Any) -> Reply:
    """Turn a step into a Reply for this request."""
    return step(req) if callable(step) else step


class FakeOpenAI:
    """Scripted OpenAI-compatible server on 127.0.0.1 (random port)."""

    def __init__(self, model: str = MODEL) -> None:
        self.model = model
        self.script: deque[Step] = deque()
        self.requests: list[Recorded] = []
        self.default: Step = answer()
        self.refuse: set[str] = set()  # response_format types always answered with 400
        self.extra_headers: dict[str, str] = {}  # sent with every reply (x-ratelimit-*...)
        self.latency = 0.0  # seconds added to every chat answer
        self.routes: dict[tuple[str, str], Route] = {
            ("POST", "/v1/chat/completions"): self.chat,
            ("GET", "/v1/models"): self.models,
        }
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._scheme = "http"

    @property
    def url(self) -> str:
        """Base URL to give the SDK (ends in /v1)."""
        assert self._httpd is not None, "server not started"
        return f"{self._scheme}://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def push(self, *steps: Step) -> Self:
        """Queue steps for the next chat requests."""
        with self.lock:
            self.script.extend(steps)
        return self

    @property
    def chats(self) -> list[Any]:
        """JSON bodies of the chat requests received so far."""
        return [r.json for r in self.requests if r.path.endswith("/chat/completions")]

    def chat(self, req: Recorded) -> Reply:
        """POST /v1/chat/completions: refusals, then the script, then the default."""
        kind = ((req.json or {}).get("response_format") or {}).get("type")
        if kind in self.refuse:
            return refusal_400(kind)
        with self.lock:
            step = self.script.popleft() if self.script else self.default
        reply = resolve(step, req.json)
        return replace(reply, delay=reply.delay + self.latency) if self.latency else reply

    def models(self, req: Recorded) -> Reply:
        """GET /v1/models."""
        return Reply(200, {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]})

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        """Record the request and dispatch it through the route table."""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        req = Recorded(method, path.split("?")[0], headers, body, raw)
        with self.lock:
            self.requests.append(req)
        route = self.routes.get((method, req.path)) or self._match(req)
        if route is None:
            return Reply(404, error_body(f"Unknown route {method} {req.path}", code="unknown_url"))
        return route(req)

    def _match(self, req: Recorded) -> Route | None:
        """Find a route whose path has `{name}` segments; fill req.params."""
        parts = req.path.split("/")
        for (method, pattern), route in self.routes.items():
            want = pattern.split("/")
            if method != req.method or "{" not in pattern or len(want) != len(parts):
                continue
            if all(w == p or (w.startswith("{") and w.endswith("}") and p) for w, p in zip(want, parts)):
                req.params.update({w[1:-1]: p for w, p in zip(want, parts) if w.startswith("{")})
                return route
        return None

    def start(self, tls: ssl.SSLContext | None = None) -> Self:
        """Serve in a daemon thread (over TLS with a server-side context)."""
        self._httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self._httpd.handle_error = _quiet_disconnects  # type: ignore[method-assign]
        threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> Self:
        """Start; stop on exit."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop."""
        self.stop()


class _Server(ThreadingHTTPServer):
    """A threading HTTP server whose listen backlog takes a whole wave of new connections.

    socketserver's default backlog is 5: when 32 calls connect at once, the kernel drops the SYNs past it
    and those clients retry after a second, which a real provider's server never makes them do.
    """

    request_queue_size = 128
    daemon_threads = True


def _quiet_disconnects(request: Any, client_address: Any) -> None:
    """A client hanging up (a cancelled call) is not worth a traceback; anything else is."""
    if not isinstance(sys.exc_info()[1], ConnectionError):
        traceback.print_exc()


def _encode(body: Any) -> bytes:
    """Send bytes as is, a str UTF-8 encoded, anything else as JSON."""
    if isinstance(body, bytes):
        return body
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


def _handler_for(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    """Build the request handler class bound to one FakeOpenAI."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(size) if size else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                reply = server.handle(self.command, self.path, headers, raw)
            except Exception as exc:  # noqa: BLE001 - a broken step must not hang the client
                reply = Reply(500, error_body(f"fake server step failed: {exc!r}", "server_error"))
            if reply.delay:
                time.sleep(reply.delay)
            body = _encode(reply.body)
            try:
                self.send_response(reply.status)
                for key, value in {"Content-Type": "application/json", **server.extra_headers, **reply.headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Stay quiet."""

    return Handler
