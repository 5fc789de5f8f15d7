"""Feeds from the outside world: source lists (URL, file, OPML, JSON), polite HTTP, link normalisation, full text."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit
from xml.etree import ElementTree

from . import repair
from .errors import FeedError, UsageError
from .htmlmd import html_to_markdown
from .template import feed_slug

__all__ = ["FeedSpec", "Fetched", "decode_body", "fetch_article", "http_get", "looks_binary", "normalize_url",
           "read_feed", "read_sources"]

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
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


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


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class FeedSpec:
    """One feed to read: where from, its id for file names, and list metadata."""

    key: str  # state key: the URL, or file:<absolute path>
    location: str  # http(s) URL or file path
    feed_id: str
    title: str | None = None
    category: str | None = None
    named: bool = False  # the id came from a list; otherwise the feed's own title names it once read

    @property
    def is_url(self) -> bool:
        """True for http(s) feeds."""
        return self.location.startswith(("http://", "https://"))


def _spec(location: str, feed_id: str | None, title: str | None, category: str | None, base: Path | None) -> FeedSpec:
    """Build a spec; files are resolved against the folder of the list naming them."""
    if re.match(r"^https?://", location, re.IGNORECASE):
        host = urlsplit(location).hostname or "feed"
        return FeedSpec(location, location, feed_slug(feed_id or title or host), title, category, bool(feed_id or title))
    if _SCHEME.match(location):
        raise UsageError(f"{location}: only http(s) URLs and local files can be read")
    path = Path(location).expanduser()
    path = (base / path) if base is not None and not path.is_absolute() else path
    named = bool(feed_id or title)
    return FeedSpec(f"file:{path.resolve()}", str(path), feed_slug(feed_id or title or path.stem), title, category, named)


def _read_feed_list(path: Path, data: bytes) -> list[FeedSpec]:
    """Read the JSON feed list: {"feeds": [{"id", "title", "url", "category", ...}], "settings": {...}}."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a valid JSON feed list ({exc})") from exc
    feeds = doc.get("feeds") if isinstance(doc, dict) else None
    if not isinstance(feeds, list):
        raise UsageError(f"{path}: a feed list needs a \"feeds\" array")
    out: list[FeedSpec] = []
    for i, item in enumerate(feeds):
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not item["url"].strip():
            raise UsageError(f"{path}: feeds[{i}] has no \"url\"")
        if item.get("enabled", True) is False:
            continue
        cat = item.get("category")
        out.append(_spec(item["url"].strip(), _opt(item.get("id")), _opt(item.get("title")), _opt(cat), path.parent))
    return out


def _opt(value: Any) -> str | None:
    """A non-empty string or None."""
    return str(value).strip() or None if isinstance(value, (str, int)) else None


def _read_opml(path: Path, data: bytes) -> list[FeedSpec]:
    """Read an OPML subscription list (category from the enclosing outline or the category attribute)."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise UsageError(f"{path}: not valid OPML ({exc})") from exc
    out: list[FeedSpec] = []

    def walk(node: ElementTree.Element, category: str | None) -> None:
        for child in node:
            if child.tag.rsplit("}", 1)[-1] != "outline":
                walk(child, category)
                continue
            url, name = child.get("xmlUrl"), child.get("title") or child.get("text")
            if url:
                cat = (child.get("category") or "").strip("/").split("/")[-1].split(",")[0] or category
                out.append(_spec(url.strip(), None, _opt(name), _opt(cat), path.parent))
            else:
                walk(child, _opt(name) or category)

    walk(root, None)
    return out


def read_sources(sources: Sequence[str]) -> list[FeedSpec]:
    """Expand the command's SOURCES (URLs, feed files, OPML, JSON lists) into feeds; UsageError on bad input."""
    specs: list[FeedSpec] = []
    for src in sources:
        if _SCHEME.match(src):
            specs.append(_spec(src, None, None, None, None))
            continue
        path = Path(src).expanduser()
        if not path.is_file():
            raise UsageError(f"{src}: no such file (give a feed URL, a feed file, an OPML file or a JSON feed list)")
        head = path.read_bytes()[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"{") and b'"feeds"' in path.read_bytes():
            specs.extend(_read_feed_list(path, path.read_bytes()))
        elif re.search(rb"<opml[\s>]", head):
            specs.extend(_read_opml(path, path.read_bytes()))
        else:
            specs.append(_spec(str(path), None, None, None, None))
    return list({s.key: s for s in specs}.values())


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
    """True for compressed or binary bytes that were decoded as text."""
    return bool(_GZIP_TEXT.match(text)) or repair.unusable_reason(text, min_chars=0) == "binary"


def fetch_article(url: str, timeout: float) -> str:
    """Fetch the article page and extract its main text (trafilatura) as Markdown; FeedError on failure."""
    import trafilatura  # optional extra, checked in ingest()

    page = http_get(url, timeout=timeout, accept=_PAGE_ACCEPT)
    if page.body[:2] == b"\x1f\x8b" or looks_binary(page.body[:4096].decode("latin-1")):
        raise FeedError(url, "the article page is binary or compressed")
    html = trafilatura.extract(page.body, url=url, output_format="html", include_links=True,
                               include_images=True, include_comments=False)
    md = html_to_markdown(html, url) if html else ""
    if len(repair.visible_text(md)) < 40 or looks_binary(md):
        raise FeedError(url, "no article text found on the page")
    return md
