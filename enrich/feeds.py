"""Feeds into notes: parse with feedparser, dedupe against the vault and the feed state, write notes."""

from __future__ import annotations

import hashlib
import io
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urljoin

import feedparser

from . import visible
from .errors import EnrichError, FeedError, UsageError
from .feedio import (BatchJournal, Fetched, fetch_article, load_state, looks_binary, normalize_url, read_feed, save_state,
                     vault_index, write_notes)
from .feedlist import FeedSpec, read_sources
from .fsio import ensure_inside
from .htmlmd import html_to_markdown, html_to_text, text_to_markdown
from .template import Entry, NameAllocator, clean_line, feed_slug, render_note

__all__ = ["FeedSpec", "IngestOptions", "IngestReport", "Progress", "ingest", "normalize_url", "read_sources", "to_entry"]

SEEN_MAX = 5000
_HARMLESS_BOZO = ("NonXMLContentType",)  # served as text/html or text/plain, parsed fine anyway

Progress = Callable[[str, str], None]  # (kind, message): kind is feed, created, warning or failed


# ---------------------------------------------------------------- entries


class _Skip(Exception):
    """An entry that is not turned into a note, with the reason."""


def _when(raw: Any) -> datetime | None:
    """feedparser's parsed time tuple as an aware UTC datetime."""
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        t = raw.get(key)
        if t:
            try:
                return datetime(*t[:6]).replace(tzinfo=timezone.utc)
            except (TypeError, ValueError):
                continue
    return None


def _body(raw: Any) -> tuple[str, str, bool]:
    """The entry's richest text as (value, mime type, summary_only)."""
    contents = [c for c in raw.get("content") or [] if str(c.get("value") or "").strip()]
    if contents:
        best = max(contents, key=lambda c: len(c.get("value") or ""))
        return str(best["value"]), str(best.get("type") or "text/html"), False
    detail = raw.get("summary_detail") or {}
    return str(raw.get("summary") or ""), str(detail.get("type") or "text/html"), True


def _to_markdown(value: str, mime: str, base: str | None) -> str:
    """Entry text to Markdown, refusing compressed/binary bodies."""
    if looks_binary(value):
        raise _Skip("binary or compressed content, not written")
    md = html_to_markdown(value, base) if "html" in mime or "xml" in mime else text_to_markdown(value)
    if looks_binary(md):
        raise _Skip("binary or compressed content, not written")
    return md


def _link(raw: Any, base: str | None) -> str:
    """The entry's normalised http(s) link, or ''."""
    link = str(raw.get("link") or "") or next(
        (str(ln["href"]) for ln in raw.get("links") or [] if ln.get("rel", "alternate") == "alternate" and ln.get("href")), "")
    link = urljoin(base or "", link.strip()) if link.strip() else ""
    return normalize_url(link) if re.match(r"^https?://", link, re.IGNORECASE) else ""


def _title(raw: Any) -> str:
    """The entry's title as one line of plain text."""
    title = str(raw.get("title") or "")
    return clean_line(html_to_text(title) if "html" in str((raw.get("title_detail") or {}).get("type") or "") else title)


def to_entry(raw: Any, spec: FeedSpec, source: str, base: str | None, url: str | None = None) -> Entry:
    """Turn one feedparser entry into an Entry (url: its _link, when known); raise _Skip when it cannot become a note."""
    url = _link(raw, base) if url is None else url
    value, mime, summary_only = _body(raw)
    content = _to_markdown(value, mime, url or base) if value.strip() else ""
    if not url and not content.strip():
        raise _Skip("no link and no text")
    title = _title(raw) or clean_line(visible.visible_text(content), 80) or url or "untitled"
    guid = str(raw.get("id") or "").strip() or None
    return Entry(feed_id=spec.feed_id, source=source, category=spec.category, title=title, url=url, guid=guid,
                 published=_when(raw), content=content, summary_only=summary_only)


# ---------------------------------------------------------------- ingest


@dataclass
class IngestOptions:
    """How `ingest` runs."""

    folder: str = "inbox"
    dry_run: bool = False
    limit: int | None = None  # new notes per feed (newest first)
    full_text: bool = False
    lang: str = "auto"  # zh, en, or auto (the vault's headings; zh when unknown)
    timeout: float = 20.0
    workers: int = 4
    today: date | None = None


@dataclass
class IngestReport:
    """What ingest created, skipped and failed, per entry and per feed."""

    dry_run: bool = False
    created: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    feeds: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # absolute paths of the created notes

    def to_json(self) -> dict[str, Any]:
        """The --json document."""
        data = asdict(self)
        data.pop("paths")
        return data


class _Run:
    """One ingest run: shared indexes, state, journal and report."""

    def __init__(self, root: Path, opts: IngestOptions, progress: Progress | None) -> None:
        self.root, self.opts, self.progress = root, opts, progress
        self.report = IngestReport(dry_run=opts.dry_run)
        self.state = load_state(root, self.warn)
        self.urls, names, votes = vault_index(root)
        self.urls.update(k[4:] for st in self.state["feeds"].values() for k in st.get("seen") or () if k.startswith("url:"))
        self.folder = _inbox(root, opts.folder)
        if self.folder.is_dir():
            names += [p.name for p in self.folder.iterdir()]
        self.names = NameAllocator(names)
        self.lang = opts.lang if opts.lang in ("zh", "en") else ("en" if votes["en"] > votes["zh"] else "zh")
        self.today = opts.today or date.today()
        self.journal = BatchJournal(root, "ingest")  # used by the writer thread only
        self.writer = ThreadPoolExecutor(1)  # one batch of notes at a time, in feed order
        self.pending: list[Callable[[], None]] = []
        self.changed = False
        self.batch: set[str] = set()  # keys (url:, guid: of this feed) of the entries this run takes

    def emit(self, kind: str, message: str) -> None:
        """Send one event to the progress callback."""
        if self.progress is not None:
            self.progress(kind, message)

    def warn(self, message: str) -> None:
        """Record and report a warning."""
        self.report.warnings.append(message)
        self.emit("warning", message)

    def fail(self, feed: str, reason: str, entry: str | None = None) -> None:
        """Record and report a failure (one line naming the feed or entry)."""
        self.report.failed.append({"feed": feed, "reason": reason, **({"entry": entry} if entry else {})})
        self.emit("failed", f"{feed}: {entry + ': ' if entry else ''}{reason}")

    def skip(self, spec: FeedSpec, title: str, url: str, reason: str) -> None:
        """Record an entry that is not written."""
        self.report.skipped.append({"feed": spec.feed_id, "title": title, "url": url, "reason": reason})

    def feed(self, spec: FeedSpec, got: Fetched | FeedError) -> None:
        """Process one fetched feed: parse, dedupe, write, update its state."""
        if not spec.named and self.state["feeds"].get(spec.key, {}).get("id"):
            spec = replace(spec, feed_id=self.state["feeds"][spec.key]["id"])
        row: dict[str, Any] = {"feed": spec.feed_id, "source": spec.location, "status": "failed", "entries": 0, "new": 0}
        self.report.feeds.append(row)
        if isinstance(got, FeedError):
            return self.fail(spec.location, got.reason)
        if got.status == 304:
            row["status"] = "not-modified"
            return self.emit("feed", f"{spec.feed_id}: not modified")
        # feedparser neither sanitises nor resolves links here: htmlmd does both, faster, and resolves relative
        # links against the entry's own link (not the feed's URL, which may be a feed proxy's).
        ctype = got.headers.get("content-type")
        parsed = feedparser.parse(io.BytesIO(got.body), response_headers={"content-type": ctype} if ctype else None,
                                  sanitize_html=False, resolve_relative_uris=False)
        if parsed.bozo and not parsed.entries:
            return self.fail(spec.location, f"not a readable feed ({_bozo(parsed)})")
        if parsed.bozo and type(parsed.get("bozo_exception")).__name__ not in _HARMLESS_BOZO:
            self.warn(f"{spec.location}: malformed feed ({_bozo(parsed)}); kept the {len(parsed.entries)} entries it could read")
        source = spec.title or clean_line(str(parsed.feed.get("title") or ""), 200) or spec.feed_id
        web = got.url if got.url.startswith(("http://", "https://")) else ""
        base = urljoin(web, str(parsed.feed.get("link") or "")) or None
        if not spec.named:  # name the feed after its own title (stable across runs), like the user's ids
            spec = replace(spec, feed_id=feed_slug(str(parsed.feed.get("title") or ""), hashed=False) or spec.feed_id)
            row["feed"] = spec.feed_id
        st = self.state["feeds"].setdefault(spec.key, {})
        st["id"] = spec.feed_id
        self.batch = {k for k in self.batch if k.startswith("url:")}
        fresh, seen = self._select(spec, parsed.entries, source, base, set(st.get("seen") or ()))
        row.update(status="ok", entries=len(parsed.entries), new=len(fresh))
        left_out = self._limit(spec, fresh)
        taken = f", {len(fresh)} taken (--limit)" if left_out else ""
        self.emit("feed", f"{spec.feed_id}: {len(parsed.entries)} entries, {row['new']} new{taken}")
        self._write(spec, sorted(fresh, key=_age), lambda keys, ok: self._remember(st, got, seen + keys, ok and not left_out))

    def _select(self, spec: FeedSpec, raws: list[Any], source: str, base: str | None,
                known: set[str]) -> tuple[list[Entry], list[str]]:
        """The feed's new entries, and the state keys of entries already known."""
        fresh: list[Entry] = []
        seen: list[str] = []
        for raw in raws:
            url, guid = _link(raw, base), str(raw.get("id") or "").strip()
            keys = [k for k in (guid and "guid:" + guid, url and "url:" + url) if k]
            if not keys:  # neither GUID nor link: known by a hash of its text, so convert first
                try:
                    keys = _keys(to_entry(raw, spec, source, base))
                except _Skip:
                    pass
            if any(k in known for k in keys) or (url and url in self.urls):
                self.skip(spec, _title(raw), url, "already in the vault or seen before")
                seen += keys
                continue
            if any(k in self.batch for k in keys):  # a twin of an entry of this run: seen once that one is written
                self.skip(spec, _title(raw), url, "duplicate of another entry of this run")
                continue
            try:
                entry = to_entry(raw, spec, source, base, url)
            except _Skip as why:
                self.skip(spec, _title(raw), url, str(why))
                continue
            self.batch.update(keys)
            fresh.append(entry)
        return fresh, seen

    def _limit(self, spec: FeedSpec, fresh: list[Entry]) -> bool:
        """Keep the newest --limit entries (and fetch full text); True when some were left for later."""
        cut = False
        if self.opts.limit is not None and len(fresh) > self.opts.limit:
            fresh.sort(key=_age, reverse=True)
            for e in fresh[self.opts.limit :]:
                self.skip(spec, e.title, e.url, f"over --limit {self.opts.limit} (left for a later run)")
            del fresh[self.opts.limit :]
            cut = True
        if self.opts.full_text:
            wanted = [i for i, e in enumerate(fresh) if e.summary_only and e.url]
            with ThreadPoolExecutor(max(1, min(self.opts.workers, len(wanted)))) as pool:
                for i, res in zip(wanted, pool.map(self._full_text, [fresh[i] for i in wanted])):
                    fresh[i] = res
        return cut

    def _full_text(self, entry: Entry) -> Entry:
        """The entry with its article text, or unchanged (with a warning) when that fails."""
        try:
            text = fetch_article(entry.url, self.opts.timeout)
            if len(text) <= len(entry.content):
                raise FeedError(entry.url, "the page holds no more text than the feed")
            return entry.model_copy(update={"content": text, "summary_only": False})
        except FeedError as exc:
            self.warn(f"{entry.url}: full text not used ({exc.reason}); kept the feed's summary")
            return entry
        except Exception as exc:  # trafilatura can fail on odd pages in many ways
            self.warn(f"{entry.url}: full text not used ({type(exc).__name__}); kept the feed's summary")
            return entry

    def _write(self, spec: FeedSpec, entries: list[Entry], then: Callable[[list[str], bool], None]) -> None:
        """Create the notes in the background (journaled, atomic; nothing in a dry run), so the next feed is parsed
        meanwhile; `then(keys of the notes written, all written)` runs when `finish` collects the results."""
        items: list[tuple[Path, bytes]] = []
        for entry in entries:
            name = self.names.allocate(self.today, spec.feed_id, entry.title)
            while (self.folder / name).exists():
                name = self.names.allocate(self.today, spec.feed_id, entry.title)
            path = self.folder / name
            items.append((path, render_note(entry, path.stem, self.today, self.lang).encode("utf-8", "replace")))
        dry = self.opts.dry_run
        job = None if dry else self.writer.submit(write_notes, items, self.root, self.journal, self.opts.workers * 2)

        def collect() -> None:
            """Record the outcome of this batch (runs in the main thread, in feed order)."""
            errors: list[str | None] = job.result() if job is not None else [None] * len(items)
            keys: list[str] = []
            for (path, _), entry, error in zip(items, entries, errors):
                rel = path.relative_to(self.root).as_posix()
                if error:
                    self.fail(spec.feed_id, error, rel)
                    continue
                self.report.created.append({"path": rel, "title": entry.title, "feed": spec.feed_id, "url": entry.url})
                self.report.paths.append(path)
                self.emit("created", rel)
                keys += _keys(entry)
            then(keys, not any(errors))

        self.pending.append(collect)

    def finish(self) -> None:
        """Collect the background writes in feed order, then save feeds.json (never in a dry run)."""
        try:
            for collect in self.pending:
                collect()
        finally:
            self.writer.shutdown()
        if self.changed and not self.opts.dry_run:
            save_state(self.root, self.state)

    def _remember(self, st: dict[str, Any], got: Fetched, seen: list[str], complete: bool) -> None:
        """Update a feed's state: seen keys always; validators only when every new entry was written."""
        old = list(st.get("seen") or [])
        merged = list(dict.fromkeys(old + seen))[-SEEN_MAX:]
        if complete:
            for key, header in (("etag", "etag"), ("last_modified", "last-modified")):
                if got.headers.get(header):
                    st[key] = got.headers[header]
        if merged != old or complete:
            st["seen"] = merged
            st["checked"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.changed = True


def _age(entry: Entry) -> datetime:
    """Sort key: publication time (undated entries first)."""
    return entry.published or datetime.min.replace(tzinfo=timezone.utc)


def _keys(entry: Entry) -> list[str]:
    """State keys of an entry: its GUID and link, or a hash of its text when it has neither."""
    keys = [k for k in (entry.guid and "guid:" + entry.guid, entry.url and "url:" + entry.url) if k]
    digest = hashlib.sha1(f"{entry.title}\n{entry.content}".encode("utf-8", "replace")).hexdigest()[:16]
    return keys or ["text:" + digest]


def _bozo(parsed: Any) -> str:
    """One line for feedparser's bozo exception."""
    exc = parsed.get("bozo_exception")
    return " ".join(str(exc).split())[:160] if exc else "unknown error"


def _inbox(root: Path, folder: str) -> Path:
    """The inbox folder, which must stay inside the vault."""
    target = root / folder
    try:
        ensure_inside(target, root)
    except EnrichError as exc:
        raise UsageError(f"--folder {folder}: must be a folder inside the vault {root}") from exc
    return target


def ingest(sources: Sequence[str], vault_root: Path, options: IngestOptions | None = None,
           progress: Progress | None = None) -> IngestReport:
    """Read feeds and create one note per new entry in the vault's inbox folder."""
    opts = options or IngestOptions()
    if not vault_root.is_dir():
        raise UsageError(f"{vault_root}: the vault folder does not exist")
    if not sources:
        raise UsageError("give at least one feed URL, feed file, OPML file or JSON feed list")
    if opts.full_text:
        try:
            import trafilatura  # noqa: F401
        except ImportError:
            raise UsageError("--full-text needs trafilatura", hint="pip install 'enrich[fulltext]'") from None
    specs = read_sources(sources)
    run = _Run(vault_root.resolve(), opts, progress)
    states = [run.state["feeds"].get(s.key, {}) for s in specs]
    with ThreadPoolExecutor(max(1, min(opts.workers, len(specs)))) as pool:
        fetched = list(pool.map(lambda p: read_feed(p[0], p[1], opts.timeout), zip(specs, states)))
    try:
        for spec, got in zip(specs, fetched):
            run.feed(spec, got)
    finally:
        run.finish()
    return run.report
