"""Ingest I/O: polite HTTP (and files), link normalisation, full text, feed state, vault index, bulk note writes."""

from __future__ import annotations

import errno
import json
import os
import re
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit, urlunsplit

from . import frontmatter, visible
from .config import STATE_DIR
from .errors import EnrichError, FeedError
from .fsio import atomic_write, ensure_inside, fsync_dir, stage
from .htmlmd import html_to_markdown
from .journal import Journal
from .vault import iter_note_files
from .feedlist import FeedSpec

__all__ = ["BatchJournal", "Fetched", "decode_body", "fetch_article", "http_get", "load_state", "looks_binary",
           "normalize_url", "read_feed", "save_state", "vault_index", "write_notes"]

USER_AGENT = "enrich/0.1 (feed reader; +https://github.com/enrich)"
MAX_BYTES = 20 * 1024 * 1024
_FEED_ACCEPT = "application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.8"
_PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
_TRACKING = re.compile(
    r"^(utm_\w*|fbclid|gclid|dclid|gbraid|wbraid|msclkid|yclid|igshid|mc_cid|mc_eid|_hsenc|_hsmi|mkt_tok"
    r"|ref|ref_src|ref_url|referrer|source|spm|cmpid|__twitter_impression)$",
    re.IGNORECASE,
)
_GZIP_TEXT = re.compile("^\\s*\x1f[\x8b\ufffd\u2039]")
_SOURCE_URL = re.compile(r"""^(?:source_url|url|link)\s*:\s*["']?(https?://[^"'\s]+)""", re.MULTILINE)
_SUSPECT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")
STATE_FILE = "feeds.json"


def normalize_url(url: str) -> str:
    """Canonical form of a link: lower-case scheme/host, no default port, tracking params, fragment or trailing /."""
    url = re.sub(r"[\x00-\x1f\x7f]", "", url).strip().replace(" ", "%20")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
    host = f"[{host}]" if ":" in host else host
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    if parts.username:
        host = f"{parts.username}{':' + parts.password if parts.password else ''}@{host}"
    query = "&".join(p for p in parts.query.split("&") if p and not _TRACKING.match(unquote(p.split("=", 1)[0])))
    out = urlunsplit((scheme, host, parts.path.rstrip("/"), query, ""))
    return re.sub(r'["<>\\^`{|}]', lambda m: f"%{ord(m.group()):02X}", out)


# ---------------------------------------------------------------- fetching


@dataclass
class Fetched:
    """A fetched document: status 200 with bytes, or 304 with nothing."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    url: str = ""


class _SafeRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        """Refuse redirects to other schemes."""
        if not newurl.lower().startswith(("http://", "https://")):
            raise urllib.error.HTTPError(newurl, code, "redirect to a non-http URL refused", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SafeRedirect)


def _inflate(data: bytes, wbits: int) -> bytes:
    """Decompress gzip/zlib data, refusing more than MAX_BYTES."""
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, MAX_BYTES)
    if d.unconsumed_tail:
        raise ValueError(f"decompressed body larger than {MAX_BYTES // 2**20} MB")
    return out


def decode_body(data: bytes, encoding: str = "") -> bytes:
    """Undo Content-Encoding (gzip/deflate), and gzip data served without saying so."""
    enc = encoding.lower().strip()
    try:
        if enc in ("gzip", "x-gzip") or data[:2] == b"\x1f\x8b":
            data = _inflate(data, 16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            try:
                data = _inflate(data, zlib.MAX_WBITS)
            except zlib.error:
                data = _inflate(data, -zlib.MAX_WBITS)
        elif enc not in ("", "identity"):
            raise ValueError(f"unsupported Content-Encoding {encoding!r}")
    except zlib.error as exc:
        raise ValueError(f"corrupt {enc or 'gzip'} body ({exc})") from exc
    return data


def http_get(url: str, *, timeout: float, accept: str = _FEED_ACCEPT, etag: str | None = None,
             modified: str | None = None, user_agent: str = USER_AGENT) -> Fetched:
    """GET with a total deadline, gzip, redirects and conditional headers; FeedError with a one-line reason."""
    headers = {"User-Agent": user_agent, "Accept": accept, "Accept-Encoding": "gzip, deflate"}
    if etag:
        headers["If-None-Match"] = etag
    if modified:
        headers["If-Modified-Since"] = modified
    deadline = time.monotonic() + timeout
    try:
        with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            chunks: list[bytes] = []
            size = 0
            while chunk := resp.read(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BYTES:
                    raise FeedError(url, f"response larger than {MAX_BYTES // 2**20} MB")
                if time.monotonic() > deadline:
                    raise TimeoutError
            got = {k.lower(): v for k, v in resp.headers.items()}
            return Fetched(resp.status, decode_body(b"".join(chunks), got.get("content-encoding", "")), got, resp.url)
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Fetched(304, url=url)
        raise FeedError(url, f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FeedError(url, _net_reason(exc.reason, timeout)) from None
    except (TimeoutError, OSError, HTTPException, ValueError) as exc:
        raise FeedError(url, _net_reason(exc, timeout)) from None


def _net_reason(exc: object, timeout: float) -> str:
    """One line for a network failure."""
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if type(exc).__name__ == "gaierror":
        return "cannot resolve the host name (DNS)"
    if isinstance(exc, HTTPException):
        return f"bad HTTP response ({type(exc).__name__}: {exc})".replace(": )", ")")
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def read_feed(spec: FeedSpec, state: dict[str, Any], timeout: float) -> Fetched | FeedError:
    """Fetch one feed (URL with conditional headers, or file); errors are returned, not raised."""
    try:
        if spec.is_url:
            return http_get(spec.location, timeout=timeout, etag=state.get("etag"), modified=state.get("last_modified"))
        try:
            return Fetched(200, decode_body(Path(spec.location).read_bytes()), {}, Path(spec.location).resolve().as_uri())
        except OSError as exc:
            raise FeedError(spec.location, f"cannot read: {exc.strerror}") from None
        except ValueError as exc:
            raise FeedError(spec.location, str(exc)) from None
    except FeedError as exc:
        return exc


def looks_binary(text: str) -> bool:
    """True for compressed or binary bytes that were decoded as text (judged on the first 4,000 characters)."""
    head = text[:4000]
    if not _SUSPECT.search(head):  # no control character, no U+FFFD: text (and no need for the full check)
        return False
    return bool(_GZIP_TEXT.match(head)) or visible.looks_binary(head)


def fetch_article(url: str, timeout: float) -> str:
    """Fetch the article page and extract its main text (trafilatura) as Markdown; FeedError on failure."""
    import trafilatura  # optional extra, checked in ingest()

    page = http_get(url, timeout=timeout, accept=_PAGE_ACCEPT)
    if page.body[:2] == b"\x1f\x8b" or looks_binary(page.body[:4096].decode("latin-1")):
        raise FeedError(url, "the article page is binary or compressed")
    html = trafilatura.extract(page.body, url=url, output_format="html", include_links=True,
                               include_images=True, include_comments=False)
    md = html_to_markdown(html, url) if html else ""
    if len(visible.visible_text(md)) < 40 or looks_binary(md):
        raise FeedError(url, "no article text found on the page")
    return md


# ---------------------------------------------------------------- state and writes


def load_state(root: Path, warn: Callable[[str], None]) -> dict[str, Any]:
    """Read <vault>/.enrich/feeds.json (an unreadable file is reported and ignored)."""
    path = root / STATE_DIR / STATE_FILE
    if not path.is_file():
        return {"version": 1, "feeds": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("feeds"), dict):
            return data
        raise ValueError("unexpected layout")
    except (OSError, ValueError) as exc:
        warn(f"{path}: unreadable feed state ({exc}); starting afresh")
        return {"version": 1, "feeds": {}}


def save_state(root: Path, state: dict[str, Any]) -> None:
    """Write feeds.json atomically."""
    atomic_write(root / STATE_DIR / STATE_FILE, json.dumps(state, ensure_ascii=False, indent=1).encode("utf-8"), root)


def vault_index(root: Path) -> tuple[set[str], list[str], dict[str, int]]:
    """Normalised source URLs of the vault's notes, all note file names, and heading-language votes."""
    urls: set[str] = set()
    names: list[str] = []
    votes = {"zh": 0, "en": 0}
    for path in iter_note_files(root):
        names.append(path.name)
        try:
            with path.open("rb") as fh:
                text = fh.read(16384).decode("utf-8", "replace").lstrip("\ufeff")
        except OSError:
            continue
        try:
            fm = frontmatter.parse(text)
            meta = fm.data if fm else {}  # FrontmatterError is raised here
            found = [str(meta[k]) for k in ("source_url", "url", "link") if isinstance(meta.get(k), str)]
        except frontmatter.FrontmatterError:
            found = _SOURCE_URL.findall(text[:4096])
        urls.update(normalize_url(u) for u in found if re.match(r"https?://", u, re.IGNORECASE))
        for line in re.findall(r"^## (关键观点|来源信息|Key points|Source)\s*$", text, re.MULTILINE):
            votes["en" if line.isascii() else "zh"] += 1
    return urls, names, votes


BatchJournal = Journal  # record_all / forget batch the manifest appends


def write_notes(items: list[tuple[Path, bytes]], root: Path, journal: BatchJournal, workers: int = 8) -> list[str | None]:
    """Create new notes: journaled first, staged and fsynced in parallel, renamed into place; error per item."""
    errors: list[str | None] = [None] * len(items)
    for i, (path, _) in enumerate(items):
        try:
            ensure_inside(path, root)
            path.parent.mkdir(parents=True, exist_ok=True)
        except (EnrichError, OSError) as exc:
            errors[i] = _reason(exc)
    todo = [i for i, e in enumerate(errors) if e is None]
    journal.record_all([items[i] for i in todo])
    mode = 0o666 & ~_umask()
    with ThreadPoolExecutor(max(1, min(workers, len(todo)))) as pool:  # concurrent fsyncs share journal commits
        staged = list(pool.map(lambda i: _stage(items[i][0], items[i][1], mode), todo))
    for i, tmp in zip(todo, staged):
        try:
            if isinstance(tmp, BaseException):
                raise tmp
            if items[i][0].exists():  # never replace a file (the names were free when allocated)
                os.unlink(tmp)
                raise FileExistsError(errno.EEXIST, "a file with this name appeared meanwhile")
            os.replace(tmp, items[i][0])
        except OSError as exc:
            errors[i] = _reason(exc)
    for folder in {items[i][0].parent for i in todo}:
        fsync_dir(folder)
    journal.forget({items[i][0].resolve().relative_to(root.resolve()).as_posix() for i in todo if errors[i]})
    return errors


def _stage(path: Path, data: bytes, mode: int) -> str | OSError:
    """Write and fsync a temp file next to `path`; return its name, or the error (the temp file removed)."""
    try:
        return stage(path, data, mode)
    except OSError as exc:
        return exc


def _umask() -> int:
    """The process umask (new notes get the permissions an editor would give them)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(exc: BaseException) -> str:
    """One line for a write failure."""
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)
