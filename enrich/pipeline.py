"""The batch: plan each note, call the model (or the cache), rewrite, diff or write."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from types import FrameType
from typing import Any, Callable

from . import buildahead, tokens
from .cache import Cache, request_key
from .config import Settings
from .errors import EnrichError, LLMError
from .llm import call_validated, sanitize
from .plan import Decision, decide
from .prepare import Content, Request, RequestBuilder
from .providers.base import Provider
from .ratelimit import Estimator, RateLimiter
from .report import NoteResult, RunReport, note_diff
from .rewrite import RewriteError, apply
from .roles import RoleTable
from .schema import Enrichment
from .vault import Vault, VaultNote, no_gc_pauses, young_gc_threshold
from .writer import NoteWriter

Progress = Callable[[str, "NoteResult | None", "RunReport"], None]

# Answered notes are rewritten and written in groups, back to back in one turn of the loop: about 10% less CPU per
# note than handling each alone between other work (bench), and their journal and folder fsyncs are shared. A
# group closes WRITE_WINDOW_S after its first answer, at WRITE_WINDOW_NOTES notes, or when no call is left in
# flight (the end of a run waits for nothing). Larger groups stall the loop: 16 notes per group cost 1.7% of
# makespan on the bench; a 50 ms cap lets rate-limited runs (~90 answers/s) group 4-5 notes (-8% CPU per note).
WRITE_WINDOW_S = 0.05
WRITE_WINDOW_NOTES = 8
GC_YOUNG = 10_000  # allocations between young collections while the calls run (vault.young_gc_threshold)


@dataclass
class RunOptions:
    """How a run behaves."""

    dry_run: bool = False
    stale: bool = False
    force: bool = False
    plan_only: bool = False


class Pipeline:
    """Runs enrichment over a list of notes of one vault."""

    def __init__(
        self,
        vault: Vault,
        settings: Settings,
        roles: RoleTable,
        provider_factory: Callable[[], Provider],
        model: str,
        options: RunOptions,
        progress: Progress | None = None,
    ) -> None:
        self.vault, self.settings, self.roles, self.options = vault, settings, roles, options
        self.model = model
        self._factory = provider_factory
        self._provider: Provider | None = None
        self.progress = progress or (lambda *_: None)
        self.report = RunReport(model=model, dry_run=options.dry_run)
        self.counter = tokens.LazyCounter(model, self.report.warnings.append)
        self.builder = RequestBuilder(vault, settings, self.counter, model)
        self.cache = Cache(None if options.plan_only else vault.root / ".enrich" / "cache.sqlite", self.report.warnings.append)
        self.limiter = RateLimiter(settings.rpm, settings.tpm, Estimator(self.counter))
        self.calling = False  # True while model calls are in flight (signals then stop cleanly)
        self._writer = NoteWriter(vault.root, "run")
        self._tasks: list[asyncio.Task[None]] = []
        self._ahead: buildahead.BuildAhead | None = None
        self._probe = (0.0, 0.0, 0)  # wall, CPU and answers since the calls started (see _probe_loop)
        self._next_start = 0  # position of the next note whose call starts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._window: list[tuple[asyncio.Future[None], asyncio.Task[Any] | None]] | None = None  # answered notes waiting
        self._window_timer: asyncio.TimerHandle | None = None
        self._in_flight = 0  # notes holding a call slot

    # ------------------------------------------------------------ planning

    def decide_all(self, notes: list[VaultNote]) -> list[tuple[VaultNote, Content | None, Decision]]:
        """Decide for every note from its content alone; the Content is kept for those that need a call."""
        with no_gc_pauses():  # acyclic results for every note: a collection would only walk them
            return [self._decide(vn) for vn in notes]

    def _decide(self, vn: VaultNote) -> tuple[VaultNote, Content | None, Decision]:
        """Decide for one note (see decide_all)."""
        try:
            c = self.builder.content(vn)
        except EnrichError as exc:
            return vn, None, Decision("failed", str(exc))
        d = decide(
            vn, self.roles, content_hash=c.content_hash, model=self.model, prompt_version=c.prompts.version,
            stale=self.options.stale, force=self.options.force, min_chars=self.settings.min_content_chars,
        )
        return vn, c if d.needs_call else None, d

    def plan(self, notes: list[VaultNote]) -> list[tuple[VaultNote, Request | None, Decision]]:
        """Decide for every note and build the full request of each that needs work (plan, batch)."""
        out: list[tuple[VaultNote, Request | None, Decision]] = []
        decided = self.decide_all(notes)
        self.builder.build_order([vn for vn, c, _ in decided if c is not None])
        for vn, c, d in decided:
            try:
                out.append((vn, self.build(vn, c) if c is not None else None, d))
            except EnrichError as exc:
                out.append((vn, None, Decision("failed", str(exc))))
        return out

    def build(self, vn: VaultNote, content: Content, parts: Any = None) -> Request:
        """The request for one note (from parts built ahead, if given); its token estimate goes to the limiter and the report."""
        self.builder.count_tokens = self.builder.count_tokens or self.limiter.counts_tokens  # a limit learnt meanwhile
        req = self.builder.assemble(vn, content, *parts) if parts is not None else self.builder.build(vn, content)
        if req.prompt_tokens is None and self.builder.count_tokens:  # built ahead before the limit was known
            req = replace(req, prompt_tokens=self.builder.prompt_tokens(vn, content, req.messages, req.candidates))
        if req.prompt_tokens is None:
            self.report.estimated_prompt_tokens = None
            return req
        if self.limiter.estimator is not None:
            self.limiter.estimator.seed(req.messages, req.prompt_tokens)
        if self.report.estimated_prompt_tokens is not None:
            self.report.estimated_prompt_tokens += req.prompt_tokens
        return req

    # ------------------------------------------------------------ running

    async def run(self, notes: list[VaultNote]) -> RunReport:
        """Enrich the notes that need it; every other note is reported as skipped."""
        start = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self.report.notes_total = len(notes)
        self.builder.count_tokens = self.limiter.counts_tokens  # with no token limit, no count is read: none is made
        decided = self.decide_all(notes)  # requests are built as calls start, so the first call leaves at once
        work = [(vn, c) for vn, c, _ in decided if c is not None]
        self.builder.build_order([vn for vn, _ in work])
        for vn, c, d in decided:
            if c is None:
                status = "failed" if d.status == "failed" else "skipped"
                self._emit(NoteResult(vn.rel, status, f"{d.status}: {d.reason}" if status == "skipped" else d.reason))
        try:
            if work and not self.options.plan_only:  # built before the calls start, not during the first one
                self._get_provider()
                if self.settings.candidates:
                    _ = self.builder.index
                self._start_building_ahead(work)
            self.progress("start", None, self.report)
            with young_gc_threshold(GC_YOUNG):
                await self._run_all(work)
        finally:
            await self._close()
        self._note_throttling()
        self.report.elapsed_s = round(time.monotonic() - start, 3)
        self.report.cost_usd = tokens.cost(self.model, self.report.prompt_tokens, self.report.completion_tokens)
        return self.report

    async def _run_all(self, work: list[tuple[VaultNote, Content]]) -> None:
        """Run the notes with bounded concurrency, an optional overall time limit, and clean interruption."""
        sem = asyncio.Semaphore(self.settings.concurrency)

        async def one(i: int, vn: VaultNote, content: Content) -> None:
            self._emit(await self._enrich_one(i, vn, content, sem))

        if not work or self.report.interrupted:
            self._mark_unfinished(work)
            return
        self.calling = True
        try:
            self._tasks = tasks = [asyncio.create_task(one(i, vn, c)) for i, (vn, c) in enumerate(work)]
            pending: set[asyncio.Task[None]] = set(tasks)  # if we are cancelled from outside: stop them all
            try:
                done, pending = await asyncio.wait(tasks, timeout=self.settings.time_limit)
            finally:
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self.calling = False
            self.limiter.close()
        self._mark_unfinished(work)
        for task in done:
            if not task.cancelled():
                task.result()

    def _mark_unfinished(self, work: list[tuple[VaultNote, Content]]) -> None:
        """Report every note without a result: interrupted (untouched) or out of time."""
        finished = {r.path for r in self.report.results}
        for vn, _ in work:
            if vn.rel in finished:
                continue
            if self.report.interrupted:  # counted, not announced one by one
                self.report.add(NoteResult(vn.rel, "interrupted", "not finished; run again to continue"))
            else:
                self._emit(NoteResult(vn.rel, "failed", f"time limit of {self.settings.time_limit:g}s reached"))

    def interrupt(self) -> None:
        """Stop the run: cancel the calls in flight, write the notes already answered; a note is only ever written
        whole, or not at all."""
        if not self.report.interrupted:
            self.report.interrupted = True
            answered = self._close_window()
            for task in self._tasks:
                if task not in answered:
                    task.cancel()

    def request_interrupt(self) -> None:
        """Ask the running loop to interrupt (safe from a signal handler)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.interrupt)

    def _note_throttling(self) -> None:
        """Put the limiter's 429 count into the report."""
        stats = self.limiter.stats
        self.report.rate_limited = stats.throttled
        if stats.throttled:
            self.report.warnings.append(
                f"the server answered 429 (rate limited) {stats.throttled} time(s); "
                f"the shared request rate was cut {stats.slowdowns} time(s)"
            )

    def _emit(self, result: NoteResult) -> None:
        """Record a result and tell the progress callback."""
        self.report.add(result)
        self.progress("note", result, self.report)

    def _start_building_ahead(self, work: list[tuple[VaultNote, Content]]) -> None:
        """Fork a waiting child that can build the requests while the loop makes the calls (enrich.buildahead)."""
        mode = self.settings.build_ahead
        if not buildahead.usable(len(work), mode) or getattr(self._provider, "name", "") != "openai":
            return
        builder = self.builder
        ahead = buildahead.BuildAhead(len(work), lambda i: builder.parts(*work[i]))
        if ahead.fork():
            self._ahead, self._probe = ahead, (time.perf_counter(), time.process_time(), 0)
            if mode == "on":
                ahead.start(0)

    def _probe_loop(self) -> None:
        """After the first answers: start the child if the loop was busy most of the time, else end it."""
        ahead = self._ahead
        if ahead is None or ahead.first is not None:
            return
        wall, cpu, answers = self._probe
        self._probe = (wall, cpu, answers + 1)
        if answers + 1 < buildahead.PROBE_NOTES:
            return
        if (time.process_time() - cpu) / max(time.perf_counter() - wall, 1e-9) >= buildahead.BUSY:
            ahead.start(self._next_start)
        else:
            ahead.close()
            self._ahead = None

    async def _enrich_one(self, i: int, vn: VaultNote, content: Content, slot: asyncio.Semaphore) -> NoteResult:
        """Build the request and get a validated result holding a call slot, then apply it; failures leave the file untouched.

        The slot is given back before the rewrite and the write: concurrency bounds the calls in flight, so the
        next call starts while this note is written. The rewrite waits for its write group to close (WRITE_WINDOW_S,
        WRITE_WINDOW_NOTES), so notes answered close together are rewritten and written together.
        """
        result = NoteResult(vn.rel, "failed", repaired=vn.repaired)
        try:
            async with slot:
                self._in_flight += 1
                try:
                    self._next_start = i + 1
                    parts = await self._ahead.get(i) if self._ahead is not None else None
                    req = self.build(vn, content, parts)
                    if parts is None and self.builder.ranked_out():  # rank the next block once this call is out
                        asyncio.get_running_loop().call_soon(self.builder.rank_next)
                    value = await self._result_for(req, result)
                finally:
                    self._in_flight -= 1
            self._probe_loop()
            await self._write_window()
            await self._apply(vn, req, value, result)
        except (EnrichError, RewriteError) as exc:
            result.status, result.reason = "failed", str(exc)
        return result

    async def _write_window(self) -> None:
        """Wait for the current write group to close (the first note to wait opens one)."""
        loop = asyncio.get_running_loop()
        if self._window is None:
            self._window = []
            self._window_timer = loop.call_later(WRITE_WINDOW_S, self._close_window)
        waiter: asyncio.Future[None] = loop.create_future()  # one per note: cancelling it cancels no other
        self._window.append((waiter, asyncio.current_task()))
        if len(self._window) >= WRITE_WINDOW_NOTES or not self._in_flight:
            self._close_window()
        await waiter

    def _close_window(self) -> set[asyncio.Task[Any] | None]:
        """Let every note of the write group go on, in the order they were answered; return their tasks."""
        window, self._window = self._window or [], None
        if self._window_timer is not None:
            self._window_timer.cancel()
            self._window_timer = None
        for waiter, _ in window:
            if not waiter.done():
                waiter.set_result(None)
        return {task for _, task in window}

    def result_key(self, req: Request) -> str:
        """Cache key of a note's result: model, prompt version, note, title, language and content.

        Not the candidates or the tag vocabulary: they shift as other notes are enriched (an
        interrupted run, a batch collected later), so a cached result keeps only the related ids
        the note's current candidate list still offers, and is re-validated before it is used.
        """
        note = f"{req.vn.rel}\n{req.vn.title}\n{req.lang}\n{req.content_hash}"
        return request_key(self.model, req.prompts.version, [{"role": "note", "content": note}], {})

    async def _result_for(self, req: Request, result: NoteResult) -> Enrichment:
        """The cached validated result, or a new model call (stored in the cache)."""
        key = self.result_key(req)
        hit = self.cache.get(key)
        if hit is not None:
            value, _, _ = hit
            try:
                result.cached = True
                return sanitize(req.spec.validate(req.spec.keep_allowed(value)), req.spec)
            except Exception:  # noqa: BLE001 - a stale cache entry is simply ignored
                result.cached = False
        call = await call_validated(
            self._get_provider(), req.messages, req.spec,
            max_tokens=self.settings.max_output_tokens, max_reasks=self.settings.max_reasks,
        )
        result.calls, result.prompt_tokens, result.completion_tokens = call.calls, call.prompt_tokens, call.completion_tokens
        value_obj = call.value  # parse_enrichment already cleaned and re-validated it
        self.cache.put(key, value_obj.model_dump(), self.model, call.prompt_tokens, call.completion_tokens)
        return value_obj

    def _get_provider(self) -> Provider:
        """The run's provider, created once (a run with no note to work on never creates one)."""
        if self._provider is None:
            self._provider = self._factory()
            if hasattr(self._provider, "limiter"):  # HTTP providers pace every attempt through the run's limiter
                self._provider.limiter = self.limiter
        return self._provider

    async def _apply(self, vn: VaultNote, req: Request, value: Enrichment, result: NoteResult) -> None:
        """Rewrite the note; show the diff (dry run) or write it atomically with a journal entry."""
        vocab = self.builder.vocab
        copied = vocab.copied_examples(list(value.tags), req.prompts.example_tags, f"{vn.title}\n{vn.note.content_text()}")
        tags = vocab.merge(vn.tags, [t for t in value.tags if t not in copied], self.settings.max_new_tags)
        vocab.learn(tags[1])  # later notes of this run reuse the spelling of a tag created here
        record = {
            "model": self.model,
            "prompt": req.prompts.version,
            "at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "content": req.content_hash,
        }
        rw = apply(
            vn.note, value, lang=req.lang, roles=self.roles, tags=tags,
            resolves=lambda t: self.vault.resolve(t) is not None, record=record,
        )
        result.new_tags = rw.new_tags
        new_bytes = rw.note.render()
        notes = (["repaired mojibake"] if vn.repaired else []) + (
            [f"dropped dangling link(s): {', '.join(rw.dropped_links)}"] if rw.dropped_links else []
        ) + ([f"dropped tag(s) copied from the prompt's example: {', '.join(copied)}"] if copied else [])
        result.reason = "; ".join(notes)
        if self.options.dry_run:
            result.status, result.diff = "would-enrich", note_diff(vn, rw.note.text)
            return
        await self._writer.write(vn, new_bytes)
        result.status = "enriched"

    async def _close(self) -> None:
        """Release the write group's timer, the build-ahead child, the provider and the cache."""
        self._close_window()  # its notes are done or cancelled by now: this only drops the state and the timer
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None
        if self._provider is not None:
            await self._provider.aclose()
        self._writer.close()
        self.cache.close()


def run_sync(pipeline: Pipeline, notes: list[VaultNote]) -> RunReport:
    """Run a pipeline to completion from synchronous code; SIGINT/SIGTERM stop it cleanly."""
    with stop_on_signals(pipeline):
        return asyncio.run(pipeline.run(notes))


@contextmanager
def stop_on_signals(pipeline: Pipeline) -> Iterator[None]:
    """While calls run, SIGINT/SIGTERM interrupt cleanly; before that, or a second time, they stop at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if pipeline.calling and not pipeline.report.interrupted:
            pipeline.request_interrupt()
        else:
            raise KeyboardInterrupt  # nothing half-done can be left: writes are atomic

    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


__all__ = ["Pipeline", "RunOptions", "RunReport", "NoteResult", "run_sync", "LLMError"]
