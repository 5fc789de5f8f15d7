"""Extensions of the fake OpenAI server: RPM/TPM enforcement and the Files / Batch API.

Usage::

    with FakeOpenAI() as srv:
        lim = enforce_limits(srv, rpm=600, tpm=60_000, burst_s=1)   # 429 + Retry-After when over
        srv.latency = 0.1
        ...
        lim.accepted, lim.rejected

        batches = add_batch_api(srv)          # /v1/files, /v1/files/{id}/content, /v1/batches[/{id}]
        batches.polls_until_done = 1          # first retrieve says in_progress
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Any

from fakeserver import FakeOpenAI, Recorded, Reply, error, error_body

from enrich.tokens import counter_for

CHAT = ("POST", "/v1/chat/completions")


def request_tokens(body: Any) -> int:
    """What the server charges a chat request: prompt tokens (tiktoken) plus max_tokens."""
    messages = [{"content": str(m.get("content", ""))} for m in (body or {}).get("messages", [])]
    return counter_for(str((body or {}).get("model") or "")).count_messages(messages) + int((body or {}).get("max_tokens") or (body or {}).get("max_completion_tokens") or 0)


def fmt_duration(seconds: float) -> str:
    """Format like OpenAI's reset headers: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:.0f}s" if minutes else f"{secs:.3g}s"


class _Bucket:
    """Server side of one budget: refills limit/60 per second, holds at most burst_s of it."""

    def __init__(self, per_minute: float, burst_s: float) -> None:
        self.rate = per_minute / 60.0
        self.limit = per_minute
        self.capacity = min(per_minute, self.rate * burst_s)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        """Add what flowed in since the last call."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def short(self, cost: float) -> float:
        """Seconds until `cost` fits (0 if it fits now)."""
        return 0.0 if self.level >= cost else (cost - self.level) / self.rate

    def headers(self, kind: str) -> dict[str, str]:
        """x-ratelimit-* headers for this budget."""
        return {
            f"x-ratelimit-limit-{kind}": str(int(self.limit)),
            f"x-ratelimit-remaining-{kind}": str(max(0, int(self.level))),
            f"x-ratelimit-reset-{kind}": fmt_duration((self.capacity - self.level) / self.rate),
        }


@dataclass
class ServerLimits:
    """Counters of an enforced limit (read them after a run)."""

    rpm: float | None
    tpm: float | None
    burst_s: float
    send_headers: bool = True
    count: Callable[[Any], int] = request_tokens
    accepted: int = 0
    rejected: int = 0
    tokens: int = 0
    first: float | None = None
    last: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._req = _Bucket(self.rpm, self.burst_s) if self.rpm else None
        self._tok = _Bucket(self.tpm, self.burst_s) if self.tpm else None

    def charge(self, body: Any) -> tuple[float, dict[str, str]]:
        """Charge one request: (0, headers) if accepted, else (seconds to wait, headers)."""
        cost = self.count(body) if self._tok else 0
        now = time.monotonic()
        with self.lock:
            for b in (self._req, self._tok):
                if b is not None:
                    b.refill(now)
            wait = max(self._req.short(1) if self._req else 0.0, self._tok.short(cost) if self._tok else 0.0)
            if wait <= 0:
                self._take(cost, now)
            else:
                self.rejected += 1
            headers = self._headers() if self.send_headers else {}
        return wait, headers

    def _take(self, cost: int, now: float) -> None:
        """Spend the budgets."""
        if self._req is not None:
            self._req.level -= 1
        if self._tok is not None:
            self._tok.level -= cost
        self.accepted += 1
        self.tokens += cost
        self.first = now if self.first is None else self.first
        self.last = now

    def _headers(self) -> dict[str, str]:
        """Current x-ratelimit-* headers."""
        out: dict[str, str] = {}
        for b, kind in ((self._req, "requests"), (self._tok, "tokens")):
            if b is not None:
                out.update(b.headers(kind))
        return out


def enforce_limits(
    srv: FakeOpenAI, rpm: float | None = None, tpm: float | None = None, burst_s: float = 60.0,
    send_headers: bool = True, count: Callable[[Any], int] = request_tokens,
) -> ServerLimits:
    """Wrap the chat route: over the limits, answer 429 with Retry-After (and retry-after-ms)."""
    limits = ServerLimits(rpm, tpm, burst_s, send_headers, count)
    inner = srv.routes[CHAT]

    def route(req: Recorded) -> Reply:
        wait, headers = limits.charge(req.json)
        if wait > 0:
            retry = {"retry-after-ms": str(math.ceil(wait * 1000)), "Retry-After": str(math.ceil(wait))}
            return error(429, "Rate limit reached", "requests", "rate_limit_exceeded", {**headers, **retry})
        reply = inner(req)
        return Reply(reply.status, reply.body, {**headers, **reply.headers}, reply.delay)

    srv.routes[CHAT] = route
    return limits


class FakeBatchAPI:
    """Files and batches kept in memory; a batch runs its JSONL through the chat route when created."""

    def __init__(self, srv: FakeOpenAI) -> None:
        self.srv = srv
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.items: list[dict[str, Any]] = []  # every request line processed
        self.polls_until_done = 0  # retrieves answered "in_progress" before "completed"
        self._n = 0
        srv.routes.update({
            ("POST", "/v1/files"): self.upload,
            ("GET", "/v1/files/{id}"): self.file_info,
            ("GET", "/v1/files/{id}/content"): self.content,
            ("POST", "/v1/batches"): self.create,
            ("GET", "/v1/batches/{id}"): self.retrieve,
            ("POST", "/v1/batches/{id}/cancel"): self.cancel,
        })

    def _id(self, prefix: str) -> str:
        """A new object id."""
        with self.srv.lock:
            self._n += 1
            return f"{prefix}-fake{self._n:04d}"

    def store(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        """Keep a file; return its file object."""
        obj = {"id": self._id("file"), "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[obj["id"]] = {**obj, "data": data}
        return obj

    def upload(self, req: Recorded) -> Reply:
        """POST /v1/files (multipart: file, purpose)."""
        parts = parse_multipart(req.headers.get("content-type", ""), req.raw)
        if "file" not in parts or "purpose" not in parts:
            return Reply(400, error_body("file and purpose are required", param="file"))
        name, data = parts["file"]
        return Reply(200, self.store(data, name or "upload.jsonl", parts["purpose"][1].decode()))

    def file_info(self, req: Recorded) -> Reply:
        """GET /v1/files/{id}."""
        f = self.files.get(req.params["id"])
        return Reply(200, {k: v for k, v in f.items() if k != "data"}) if f else _missing("file", req.params["id"])

    def content(self, req: Recorded) -> Reply:
        """GET /v1/files/{id}/content (raw bytes)."""
        f = self.files.get(req.params["id"])
        return Reply(200, f["data"], {"Content-Type": "application/octet-stream"}) if f else _missing("file", req.params["id"])

    def create(self, req: Recorded) -> Reply:
        """POST /v1/batches: validate, then run every line through the chat route."""
        body = req.json or {}
        f = self.files.get(body.get("input_file_id", ""))
        if f is None:
            return _missing("file", body.get("input_file_id", ""))
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return Reply(400, error_body("unsupported endpoint or completion_window", param="endpoint"))
        ok, bad = self._process(f["data"])
        batch = {
            "id": self._id("batch"), "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": f["id"], "completion_window": "24h", "status": "in_progress",
            "created_at": int(time.time()), "metadata": body.get("metadata"),
            "output_file_id": self.store(_jsonl(ok), "output.jsonl", "batch_output")["id"] if ok else None,
            "error_file_id": self.store(_jsonl(bad), "errors.jsonl", "batch_output")["id"] if bad else None,
            "request_counts": {"total": len(ok) + len(bad), "completed": len(ok), "failed": len(bad)},
            "_polls": self.polls_until_done,
        }
        self.batches[batch["id"]] = batch
        return self._view(batch)

    def _process(self, data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Answer each JSONL request line with the chat route (latency not applied)."""
        ok: list[dict[str, Any]] = []
        bad: list[dict[str, Any]] = []
        for n, line in enumerate(data.decode("utf-8").splitlines()):
            if not line.strip():
                continue
            item = json.loads(line)
            self.items.append(item)
            reply = self.srv.routes[CHAT](Recorded("POST", item["url"], {}, item["body"]))
            out = {"id": f"batch_req_{n}", "custom_id": item["custom_id"], "error": None,
                   "response": {"status_code": reply.status, "request_id": f"req_{n}", "body": reply.body}}
            (ok if reply.status == 200 else bad).append(out)
        return ok, bad

    def retrieve(self, req: Recorded) -> Reply:
        """GET /v1/batches/{id}: in_progress for the first `polls_until_done` polls."""
        batch = self.batches.get(req.params["id"])
        if batch is None:
            return _missing("batch", req.params["id"])
        if batch["status"] == "in_progress":
            if batch["_polls"] > 0:
                batch["_polls"] -= 1
            else:
                batch["status"], batch["completed_at"] = "completed", int(time.time())
        return self._view(batch)

    def cancel(self, req: Recorded) -> Reply:
        """POST /v1/batches/{id}/cancel."""
        batch = self.batches.get(req.params["id"])
        if batch is None:
            return _missing("batch", req.params["id"])
        batch["status"] = "cancelled"
        return self._view(batch)

    @staticmethod
    def _view(batch: dict[str, Any]) -> Reply:
        """The public batch object (in-progress batches hide their output)."""
        done = batch["status"] == "completed"
        data = {k: v for k, v in batch.items() if not k.startswith("_")}
        if not done:
            data.update(output_file_id=None, error_file_id=None)
        return Reply(200, data)


def add_batch_api(srv: FakeOpenAI) -> FakeBatchAPI:
    """Serve the Files and Batch API on srv."""
    return FakeBatchAPI(srv)


def parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a multipart/form-data body: name -> (filename, bytes)."""
    msg = BytesParser(policy=email_policy).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    out: dict[str, tuple[str | None, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            out[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return out


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    """Rows as JSON lines."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _missing(kind: str, ident: str) -> Reply:
    """A 404 for an unknown object."""
    return Reply(404, error_body(f"No such {kind}: {ident}", code="not_found"))


# ---------------------------------------------------------------- load-test vaults

_WORDS = (
    "note link graph idea habit review archive memory retrieval paper reading writing model token budget attention "
    "focus network topic folder search index tag vocabulary summary insight question answer experiment feedback loop "
    "project plan system design cache latency throughput batch queue limit"
).split()


def note_text(i: int, rng: Any) -> str:
    """One generated note with placeholder key points (a note `enrich run` will work on)."""
    title = " ".join(rng.choice(_WORDS).capitalize() for _ in range(4))
    paras = "\n\n".join(
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 90))).capitalize() + "." for _ in range(rng.randint(3, 6))
    )
    a, b = rng.sample(_WORDS, 2)
    return (
        f'---\nid: gen-{i:05d}\ntitle: {title}\ncreated: 2026-03-01\ntags: ["rss","{a}","{b}"]\nsource: "Gen Blog"\n---\n\n'
        f"# {title}\n\n## 来源信息\n\n- **来源**: Gen Blog\n\n## 核心内容\n\n{paras}\n\n"
        f"## 关键观点\n\n- 核心主题涉及{title.split()[0]}\n- 研究来源: Gen Blog\n\n"
        f"## 深度思考\n\nMy own thoughts about note {i}.\n\n## 相关链接\n\n- (暂无关联卡片)\n"
    )


def write_vault(folder: Any, n: int, seed: int = 7) -> dict[str, bytes]:
    """Write n generated notes into folder; return name -> bytes."""
    import random
    from pathlib import Path

    rng = random.Random(seed)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, bytes] = {}
    for i in range(n):
        data = note_text(i, rng).encode("utf-8")
        (root / f"gen-{i:05d}.md").write_bytes(data)
        out[f"gen-{i:05d}.md"] = data
    return out
