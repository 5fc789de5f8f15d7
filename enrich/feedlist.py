"""What to read: feed URLs, feed files, OPML subscription lists and the JSON feed list, as FeedSpecs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit
from xml.etree import ElementTree

from .errors import UsageError
from .template import feed_slug

__all__ = ["FeedSpec", "read_sources"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


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
        """Collect feed outlines; a folder outline's name becomes the category of those inside."""
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
        data = path.read_bytes()
        head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"{") and b'"feeds"' in data:
            specs.extend(_read_feed_list(path, data))
        elif re.search(rb"<opml[\s>]", head):
            specs.extend(_read_opml(path, data))
        else:
            specs.append(_spec(str(path), None, None, None, None))
    return list({s.key: s for s in specs}.values())
