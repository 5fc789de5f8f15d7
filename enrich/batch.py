"""The Batch API: submit the notes' requests as one JSONL batch, poll it, collect and apply the answers.

Collected answers take the same path as `enrich run`: parse and validate against the note's
current per-note model, store in the result cache, then the pipeline rewrites, journals and
atomically writes each note.  A note changed since submission has a different result key and is
planned again (a normal call); failed or invalid items are retried as normal calls unless
retry=False.  State lives in `<vault>/.enrich/batches/<id>.json`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import openai
from pydantic import ValidationError

from .api import model_for, open_vault, select_notes
from .config import STATE_DIR, Settings, find_vault_root, load_settings
from .errors import EnrichError, LLMError, TransportError, UsageError
from .fsio import atomic_write
from .llm import parse_enrichment
from .pipeline import Pipeline, Progress, RunOptions, run_sync
from .prepare import Request
from .providers import make_provider
from .providers.openai_provider import DUMMY_KEY, OpenAIProvider
from .report import NoteResult, RunReport
from .vault import VaultNote

ENDPOINT: Final = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
T = TypeVar("T")


class BatchNotReady(EnrichError):
    """The batch is still running: collect again later (exit code 75, EX_TEMPFAIL)."""

    exit_code = 75


@dataclass
class BatchItem:
    """One request of a batch: its note, result key, article hash and the note file's hash."""

    path: str
    key: str
    content: str
    sha: str


@dataclass
class BatchState:
    """What `<vault>/.enrich/batches/<id>.json` records about one submitted batch."""

    id: str
    model: str
    created: float
    input_file_id: str
    options: dict[str, bool]
    items: dict[str, BatchItem]
    cached: list[str] = field(default_factory=list)  # notes whose result was cached already at submission
    status: str = "validating"
    collected: float | None = None
    summary: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def folder(root: Path) -> Path:
        """Where batch states live."""
        return root / STATE_DIR / "batches"

    def save(self, root: Path) -> Path:
        """Write the state atomically; return its path."""
        path = self.folder(root) / f"{self.id}.json"
        atomic_write(path, json.dumps(asdict(self), ensure_ascii=False, indent=1).encode("utf-8"), root)
        return path

    @classmethod
    def load(cls, root: Path, batch_id: str | None = None) -> BatchState:
        """Load one batch's state, or the newest one when batch_id is None."""
        if batch_id is not None and not _SAFE_ID.match(batch_id):
            raise UsageError(f"not a batch id: {batch_id!r}")
        folder = cls.folder(root)
        paths = [folder / f"{batch_id}.json"] if batch_id else sorted(folder.glob("*.json"))
        states = [cls._read(p) for p in paths if p.is_file()]
        if not states:
            what = f"batch {batch_id}" if batch_id else "any batch"
            raise UsageError(f"no record of {what} in {folder}", hint="submit one with `enrich run --batch`")
        return max(states, key=lambda s: s.created)

    @classmethod
    def _read(cls, path: Path) -> BatchState:
        """Parse one state file."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["items"] = {cid: BatchItem(**item) for cid, item in data["items"].items()}
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise EnrichError(f"{path}: unreadable batch state: {exc}") from exc


@dataclass
class Submitted:
    """What `enrich run --batch` did."""

    batch_id: str | None
    status: str
    requests: int = 0
    cached: int = 0
    skipped: int = 0
    failed: int = 0
    state_path: str = ""


@dataclass
class BatchStatus:
    """A batch as the server describes it now."""

    id: str
    status: str
    total: int
    completed: int
    failed: int
    notes: int
    collected: bool


@dataclass
class Collected:
    """What `enrich batch collect` did: the run report plus what came from the batch."""

    batch_id: str
    status: str
    report: RunReport
    from_batch: int = 0
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def _api(what: str, call: Callable[[], T]) -> T:
    """Run one Files/Batches call; turn SDK errors into LLMError."""
    try:
        return call()
    except openai.APIStatusError as exc:
        raise LLMError(f"{what} failed: HTTP {exc.status_code}: {str(exc.message)[:200]}") from exc
    except openai.APIError as exc:
        raise TransportError(f"{what} failed: {exc.__class__.__name__}", hint="check --base-url and the network") from exc


def _client(settings: Settings) -> openai.OpenAI:
    """A synchronous client for the Files and Batches endpoints (same URL and key as calls)."""
    if not isinstance(make_provider(settings), OpenAIProvider):
        raise UsageError("the Batch API needs an OpenAI-compatible API", hint="pass --base-url, or set OPENAI_API_KEY")
    return openai.OpenAI(
        base_url=settings.base_url, api_key=settings.api_key() or DUMMY_KEY, timeout=settings.timeout, max_retries=3
    )


def _cached_ok(pipe: Pipeline, req: Request) -> bool:
    """True when the cache already holds a result valid for this request."""
    hit = pipe.cache.get(pipe.result_key(req))
    if hit is None:
        return False
    try:
        req.spec.validate(req.spec.keep_allowed(hit[0]))
    except ValidationError:
        return False
    return True


def submit(paths: Sequence[Path], flags: Mapping[str, Any] | None = None, options: RunOptions | None = None) -> Submitted:
    """Plan the notes, upload the requests as JSONL, create the batch and record its state."""
    paths = list(paths) or [Path.cwd()]
    vault, settings, roles = open_vault(paths[0], flags)
    notes = select_notes(vault, paths, roles)
    provider = make_provider(settings)
    if not isinstance(provider, OpenAIProvider):
        raise UsageError("the Batch API needs an OpenAI-compatible API", hint="pass --base-url, or set OPENAI_API_KEY")
    opts = {"stale": bool(options and options.stale), "force": bool(options and options.force)}
    pipe = Pipeline(vault, settings, roles, lambda: provider, provider.model, RunOptions(**opts))
    out = Submitted(None, "nothing to submit")
    lines: list[str] = []
    items: dict[str, BatchItem] = {}
    cached: list[str] = []
    try:
        for vn, req, decision in pipe.plan(notes):
            if req is None:
                out.failed += decision.status == "failed"
                out.skipped += decision.status != "failed"
            elif _cached_ok(pipe, req):
                cached.append(vn.rel)
            else:
                cid = f"note-{len(items):05d}"
                body = provider.request_body(req.messages, req.spec.schema, max_tokens=settings.max_output_tokens)
                lines.append(json.dumps({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body}, ensure_ascii=False))
                items[cid] = BatchItem(vn.rel, pipe.result_key(req), req.content_hash, hashlib.sha256(vn.raw).hexdigest())
    finally:
        pipe.cache.close()
    out.requests, out.cached = len(lines), len(cached)
    if not lines:
        return out
    client = _client(settings)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    upload = _api("upload", lambda: client.files.create(file=("enrich-batch.jsonl", data, "application/jsonl"), purpose="batch"))
    batch = _api("create batch", lambda: client.batches.create(
        input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h", metadata={"tool": "enrich"}))
    state = BatchState(batch.id, provider.model, time.time(), upload.id, opts, items, cached, batch.status)
    out.batch_id, out.status, out.state_path = batch.id, batch.status, str(state.save(vault.root))
    return out


def status(vault_path: Path, batch_id: str | None = None, flags: Mapping[str, Any] | None = None) -> BatchStatus:
    """Ask the server how a batch is doing (and record its status)."""
    root = find_vault_root(vault_path)
    state = BatchState.load(root, batch_id)
    client = _client(load_settings(root, {"model": state.model, **(flags or {})}))
    batch = _api("retrieve batch", lambda: client.batches.retrieve(state.id))
    state.status = batch.status
    state.save(root)
    counts = batch.request_counts
    return BatchStatus(
        state.id, batch.status, counts.total if counts else len(state.items), counts.completed if counts else 0,
        counts.failed if counts else 0, len(state.items) + len(state.cached), state.collected is not None,
    )


def _download(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    """Lines of an output or error file by custom_id."""
    if not file_id:
        return {}
    raw = _api("download", lambda: client.files.content(file_id)).content
    out: dict[str, dict[str, Any]] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("custom_id"), str):
            out[row["custom_id"]] = row
    return out


def answer_text(row: dict[str, Any] | None) -> tuple[str | None, str, dict[str, Any]]:
    """(content, why-not, usage) of one output line; content None when the item failed."""
    if row is None:
        return None, "no answer in the batch output", {}
    response = row.get("response") or {}
    body = response.get("body") or {}
    if row.get("error") or response.get("status_code") != 200:
        err = row.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
        message = err.get("message", err) if isinstance(err, dict) else err
        return None, f"HTTP {response.get('status_code')}: {str(message)[:200]}", {}
    choice = (body.get("choices") or [{}])[0]
    if choice.get("finish_reason") == "length":
        return None, "the model stopped at max_tokens before finishing", {}
    return (choice.get("message") or {}).get("content") or "", "", body.get("usage") or {}


def _stash(pipe: Pipeline, state: BatchState, answers: dict[str, dict[str, Any]], notes: list[VaultNote], out: Collected) -> None:
    """Validate each answer against its note's current model; cache the valid ones."""
    planned = {vn.rel: req for vn, req, _ in pipe.plan(notes) if req is not None}
    for cid, item in state.items.items():
        req = planned.get(item.path)
        if req is None:
            continue  # no longer needs work (up to date, edited, gone): the run reports it
        if pipe.result_key(req) != item.key:
            out.changed.append(item.path)
            continue
        text, why, usage = answer_text(answers.get(cid))
        try:
            if text is None:
                raise ValueError(why)
            value = parse_enrichment(text, req.spec)
        except (ValueError, ValidationError) as exc:
            out.invalid.append((item.path, why or f"invalid answer: {str(exc).splitlines()[0][:200]}"))
            continue
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        pipe.cache.put(item.key, value.model_dump(), pipe.model, prompt, completion)
        out.from_batch += 1
        out.batch_prompt_tokens += prompt
        out.batch_completion_tokens += completion


def collect(
    vault_path: Path, batch_id: str | None = None, flags: Mapping[str, Any] | None = None,
    retry: bool = True, progress: Progress | None = None,
) -> Collected:
    """Download a finished batch and apply it like `run`; retry failed items as normal calls."""
    root = find_vault_root(vault_path)
    state = BatchState.load(root, batch_id)
    merged = {"model": state.model, **{k: v for k, v in (flags or {}).items() if v is not None}}
    if merged["model"] != state.model:
        raise UsageError(f"batch {state.id} was made for model {state.model!r}, not {merged['model']!r}")
    vault, settings, roles = open_vault(root, merged)
    client = _client(settings)
    batch = _api("retrieve batch", lambda: client.batches.retrieve(state.id))
    state.status = batch.status
    if batch.status not in TERMINAL:
        state.save(root)
        counts = batch.request_counts
        done = f" ({counts.completed + counts.failed}/{counts.total} done)" if counts else ""
        raise BatchNotReady(f"batch {state.id} is {batch.status}{done}", hint="collect again later")
    answers = {**_download(client, batch.error_file_id), **_download(client, batch.output_file_id)}
    model, factory, description = model_for(settings)
    pipe = Pipeline(vault, settings, roles, factory, model, RunOptions(**state.options), progress)
    pipe.report.provider = description
    by_path = {vn.rel: vn for vn in vault.notes}
    wanted = list(dict.fromkeys([it.path for it in state.items.values()] + state.cached))
    notes = [by_path[p] for p in wanted if p in by_path]
    out = Collected(state.id, batch.status, pipe.report)
    _stash(pipe, state, answers, notes, out)
    held = set() if retry else {p for p, _ in out.invalid} | set(out.changed)
    out.report = run_sync(pipe, [vn for vn in notes if vn.rel not in held])
    _report_held(out, wanted, by_path, retry)
    state.collected = time.time()
    state.summary = {"from_batch": out.from_batch, "invalid": len(out.invalid), "changed": len(out.changed),
                     "enriched": out.report.enriched, "failed": out.report.failed}
    state.save(root)
    return out


def _report_held(out: Collected, wanted: list[str], by_path: Mapping[str, VaultNote], retry: bool) -> None:
    """Failed results for items not retried, and for notes no longer in the vault."""
    extra = [NoteResult(p, "failed", "no longer in the vault") for p in wanted if p not in by_path]
    if not retry:
        extra += [NoteResult(p, "failed", f"batch item failed: {why} (not retried: --no-retry)") for p, why in out.invalid]
        extra += [NoteResult(p, "failed", "changed since submission (not retried: --no-retry)") for p in out.changed]
    for r in extra:
        out.report.add(r)
    out.report.notes_total += len(extra)
