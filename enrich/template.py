"""Entry -> note: the vault's RSS note format (frontmatter + five sections) and a safe file name."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from datetime import date, datetime, timezone
from typing import Iterable

import yaml
from pydantic import BaseModel, ConfigDict

from .roles import CONTENT, KEY_POINTS, RELATED, SOURCE, THOUGHTS, RoleTable, default_roles

__all__ = ["Entry", "NameAllocator", "clean_line", "feed_slug", "render_note", "slugify", "yaml_scalar"]

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SLUG_CHARS = 30
FEED_ID_CHARS = 40
TITLE_CHARS = 500
_NUMBERISH = re.compile(
    r"[-+]?(?:\.?\d[\d_:]*(?:\.\d*)?(?:[eE][-+]?\d+)?|0[xob][0-9a-f_]+|\.inf|\.nan)", re.IGNORECASE
)

_SIMPLE = re.compile(r"[^\W\d_][\w.,'()!?+/-]*(?: [\w.,'()!?&+/-]+)*")
_YAML_WORDS = frozenset("y n yes no on off true false null".split())

LABELS: dict[str, dict[str, str]] = {
    "zh": {
        "source": "来源", "published": "发布时间", "link": "原文链接", "collected": "采集时间",
        "unknown": "见原文", "no_link": "无", "no_text": "(暂无正文，见原文)",
        "key_points": "- (暂无要点)", "thoughts": "<!-- 对上述观点的反思、质疑、延伸问题 -->",
        "related": "- (暂无关联卡片)", "footer": "*RSS 自动采集 - 处理时间: {day}*", "untitled": "无标题",
    },
    "en": {
        "source": "Source", "published": "Published", "link": "Original link", "collected": "Collected",
        "unknown": "see the original", "no_link": "none", "no_text": "(no text in the feed; see the original)",
        "key_points": "- (none yet)", "thoughts": "<!-- Your reflections, doubts and follow-up questions -->",
        "related": "- (none yet)", "footer": "*Imported from RSS - processed: {day}*", "untitled": "Untitled",
    },
}


class Entry(BaseModel):
    """One feed entry, cleaned and ready to become a note."""

    model_config = ConfigDict(frozen=True)

    feed_id: str  # already a safe slug (see feed_slug)
    source: str  # the feed's title, shown as 来源 / Source
    category: str | None = None
    title: str
    url: str = ""  # the normalised link ("" when the entry has none)
    guid: str | None = None
    published: datetime | None = None
    content: str = ""  # Markdown
    summary_only: bool = False


def clean_line(text: str, limit: int = TITLE_CHARS) -> str:
    """One line of plain text: whitespace collapsed, control, format (bidi) and unassigned characters removed, capped."""
    text = " ".join(text.split())
    if not text.isprintable():
        text = "".join(ch for ch in text if ch.isprintable())
    return text[:limit].rstrip()


def _fold(text: str) -> str:
    """NFKC, lower-case, and accents dropped from Latin letters (CJK and kana marks are kept)."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch) and out and out[-1].isascii():
            continue
        out.append(ch)
    return unicodedata.normalize("NFKC", "".join(out)).lower()


def slugify(title: str, limit: int = SLUG_CHARS) -> str:
    """A file-name-safe slug: letters and digits (any script) joined by '-', at most `limit` chars."""
    slug = re.sub(r"[\W_]+", "-", _fold(title)).strip("-")
    return slug[:limit].strip("-") or "untitled"


def feed_slug(raw: str, *, hashed: bool = True) -> str:
    """A feed id usable in file names: [a-z0-9_-], at most 40 chars (empty only when not `hashed`)."""
    slug = re.sub(r"[^a-z0-9_-]+", "_", _fold(raw)).strip("_-")[:FEED_ID_CHARS].strip("_-")
    return slug or ("feed_" + hashlib.sha1(raw.encode("utf-8", "replace")).hexdigest()[:8] if hashed else "")


def tag_slug(raw: str) -> str:
    """A category as an Obsidian tag: lower-case, no spaces or punctuation except _ - /."""
    return re.sub(r"[^\w/-]+", "-", _fold(raw)).strip("-/")


def yaml_scalar(value: str) -> str:
    """The value as a YAML scalar: plain when that reads back identically, else JSON-quoted."""
    if _SIMPLE.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value  # words, spaces and mild punctuation after a letter: plain in YAML 1.1 and 1.2
    if value and value.isprintable() and not _NUMBERISH.fullmatch(value) and value == value.strip():
        try:
            if yaml.load(f"k: {value}", Loader=_LOADER) == {"k": value}:
                return value
        except yaml.YAMLError:
            pass
    for ascii_only in (False, True):
        quoted = json.dumps(value, ensure_ascii=ascii_only)
        try:
            if yaml.load(f"k: {quoted}", Loader=_LOADER) == {"k": value}:
                return quoted
        except yaml.YAMLError:
            continue
    return json.dumps(clean_line(value), ensure_ascii=True)


def _quoted(value: str) -> str:
    """A JSON-quoted YAML string (escaped to ASCII when it holds characters YAML refuses raw)."""
    return json.dumps(value, ensure_ascii=not value.isprintable())


def _published(entry: Entry) -> str:
    """The entry's publication time as ISO 8601 UTC, or ''."""
    if entry.published is None:
        return ""
    when = entry.published if entry.published.tzinfo else entry.published.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_note(entry: Entry, note_id: str, day: date, lang: str = "zh", roles: RoleTable | None = None) -> str:
    """The note text (LF newlines, final newline) in the vault's RSS format."""
    roles = roles or default_roles()
    lang = lang if lang in LABELS else "en"
    lab = LABELS[lang]
    title = clean_line(entry.title) or lab["untitled"]
    source = clean_line(entry.source, 200)
    tags = list(dict.fromkeys(t for t in ("rss", tag_slug(entry.category or ""), "auto-import") if t))
    published = _published(entry)
    content = entry.content.strip("\n") or lab["no_text"]
    front = [
        "---",
        f"id: {yaml_scalar(note_id)}",
        f"title: {yaml_scalar(title)}",
        f"created: {day.isoformat()}",
        f"tags: {json.dumps(tags, ensure_ascii=False, separators=(',', ':'))}",
        f"source: {_quoted(source)}",
        f"source_url: {_quoted(entry.url)}",
        'source_type: "article"',
        f"published: {json.dumps(published)}",
        f"content_length: {len(entry.content.strip())}",
        "---",
    ]
    shown_time = published.replace("T", " ")[:16] + " UTC" if published else lab["unknown"]

    def head(role: str) -> str:
        """The `## ` heading line of a role in the note's language."""
        return "## " + roles.heading_for(role, lang)

    body = [
        "",
        f"# {title}",
        "",
        head(SOURCE),
        "",
        f"- **{lab['source']}**: {source}",
        f"- **{lab['published']}**: {shown_time}",
        f"- **{lab['link']}**: {entry.url or lab['no_link']}",
        f"- **{lab['collected']}**: {day.isoformat()}",
        "",
        head(CONTENT),
        "",
        content,
        "",
        head(KEY_POINTS),
        "",
        lab["key_points"],
        "",
        head(THOUGHTS),
        "",
        lab["thoughts"],
        "",
        head(RELATED),
        "",
        lab["related"],
        "",
        "---",
        lab["footer"].format(day=day.isoformat()),
    ]
    return "\n".join(front + body) + "\n"


class NameAllocator:
    """Hands out `YYYYMMDD-rss-{feed}-{NNN}-{slug}.md` names that collide with no existing note."""

    def __init__(self, existing: Iterable[str]) -> None:
        self.names = [n for n in existing]
        self.taken = {_stem(n).casefold() for n in self.names}
        self.counters: dict[tuple[str, str], int] = {}

    def _start(self, stamp: str, feed_id: str) -> int:
        """The highest counter already used for this day and feed (0 when none)."""
        key = (stamp, feed_id)
        if key not in self.counters:
            pat = re.compile(rf"{stamp}-rss-{re.escape(feed_id)}-(\d{{3,5}})-", re.IGNORECASE)
            used = [int(m.group(1)) for n in self.names if (m := pat.match(n))]
            self.counters[key] = max(used, default=0)
        return self.counters[key]

    def allocate(self, day: date, feed_id: str, title: str) -> str:
        """Reserve and return the next free file name for an entry."""
        stamp = day.strftime("%Y%m%d")
        slug = slugify(title)
        n = self._start(stamp, feed_id) + 1
        while True:
            name = f"{stamp}-rss-{feed_id}-{n:03d}-{slug}.md"
            if _stem(name).casefold() not in self.taken:
                break
            n += 1
        self.counters[(stamp, feed_id)] = n
        self.taken.add(_stem(name).casefold())
        self.names.append(name)
        return name


def _stem(name: str) -> str:
    """A file name without its extension."""
    return name.rsplit(".", 1)[0] if "." in name else name
