"""Frontmatter: find it, parse it (YAML or JSON), edit one key in the file's own style."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from datetime import date
from typing import Any

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster
_FENCE = re.compile(r"---[ \t]*(\r\n|\n|\r)")
_CLOSE = re.compile(r"^(---|\.\.\.)[ \t]*(\r\n|\n|\r|$)", re.MULTILINE)
_WS = re.compile(r"\s*")
_KEY_NAME = re.compile(r"[A-Za-z_][\w\-]*")  # a top-level key as the editor finds it
_TOP_KEY = re.compile(rf"^({_KEY_NAME.pattern})[ \t]*:(.*)$")


class FrontmatterError(ValueError):
    """The frontmatter block exists but cannot be parsed."""


@dataclass(frozen=True)
class Frontmatter:
    """The frontmatter block of a note: its span and format; the data is parsed on first use."""

    start: int  # offset of the opening ---
    body_start: int  # offset of the first line inside
    body_end: int  # offset of the closing --- line
    end: int  # offset just after the closing line (and its newline)
    format: str  # "yaml" or "json"
    raw: str

    @cached_property
    def _parsed(self) -> tuple[dict[str, Any], str | None]:
        """(data, error): raises FrontmatterError when not even a lenient reading works."""
        return _load(self.raw, self.format)

    @property
    def data(self) -> dict[str, Any]:
        """The parsed mapping (rendering never needs it, so it is computed lazily)."""
        return self._parsed[0]

    @property
    def error(self) -> str | None:
        """Set when strict parsing failed and a lenient reading was used."""
        return self._parsed[1]


def find(text: str) -> tuple[int, int, int, int] | None:
    """Return (start, body_start, body_end, end) of a leading --- block, or None."""
    m = _FENCE.match(text)
    if not m:
        return None
    close = _CLOSE.search(text, m.end())
    if not close:
        return None
    return 0, m.end(), close.start(), close.end()


def parse(text: str) -> Frontmatter | None:
    """Find the leading frontmatter block; its data is parsed on first access (FrontmatterError)."""
    span = find(text)
    if span is None:
        return None
    start, body_start, body_end, end = span
    raw = text[body_start:body_end]
    fmt = "json" if raw.lstrip().startswith("{") else "yaml"
    return Frontmatter(start, body_start, body_end, end, fmt, raw)


def _load(raw: str, fmt: str) -> tuple[dict[str, Any], str | None]:
    """Parse frontmatter text strictly, else leniently; raise FrontmatterError when neither works."""
    error: str | None = None
    try:
        data = json.loads(raw) if fmt == "json" else (fast_yaml(raw) or yaml.load(raw, Loader=_LOADER))
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        error = f"frontmatter is not valid {fmt.upper()}: {first}"
        data = _lenient(raw) if fmt == "yaml" else None
        if data is None:
            raise FrontmatterError(error) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FrontmatterError(f"frontmatter is a {type(data).__name__}, not a mapping")
    return data, error


_FAST_LINE = re.compile(r"([A-Za-z_][\w\-]*):(?:[ \t]+(.*?))?[ \t]*")
_PLAIN = re.compile(r"[A-Za-z0-9\u00c0-\uffff][\w\u00c0-\uffff \-./',()&+]*")
_NUMBERISH = re.compile(r"[0-9a-fA-FxXoO.+_\-]*")  # a digit-led plain scalar made only of these may be a number (0x1f)
_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,15})")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]{0,15})\.[0-9]+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}
_LEADING_ZERO = re.compile(r"0[0-9]+")
_OCTAL = re.compile(r"0[0-7]+")
_FLOW_WORD = re.compile(r"[A-Za-z\u00c0-\uffff][\w\u00c0-\uffff\-.]*(?: [\w\u00c0-\uffff\-.]+)*")
_NOT_FAST = object()


def fast_yaml(raw: str) -> dict[str, Any] | None:
    """Parse the common flat frontmatter (`key: value`, flow or block lists of words) without YAML; None when unsure."""
    data: dict[str, Any] = {}
    lines = raw.splitlines()
    i = 0
    while i < len(lines):
        m = _FAST_LINE.fullmatch(lines[i])
        if not m:
            return None
        i += 1
        if m.group(2) is None and i < len(lines) and lines[i].lstrip().startswith("- "):
            items, i = _block_list(lines, i)
            value: Any = items
        else:
            value = _fast_scalar(m.group(2) or "")
        if value is _NOT_FAST or m.group(1) in data:
            return None
        data[m.group(1)] = value
    return data or None


def _block_list(lines: list[str], i: int) -> tuple[Any, int]:
    """Read `- item` lines of one indentation from lines[i]; (_NOT_FAST, i) when unsure."""
    indent = len(lines[i]) - len(lines[i].lstrip(" "))
    items: list[Any] = []
    while i < len(lines) and lines[i].startswith(" " * indent + "- "):
        item = _fast_scalar(lines[i][indent + 2 :].strip())
        if item is _NOT_FAST or item is None or lines[i][indent + 2 : indent + 3] in (" ", "\t"):
            return _NOT_FAST, i
        items.append(item)
        i += 1
    return items, i


def _flow_list(v: str) -> Any:
    """Read `[a, b c, d-e]` made of plain words only, or _NOT_FAST."""
    inner = v[1:-1].strip() if v.endswith("]") else None
    if inner is None:
        return _NOT_FAST
    if not inner:
        return []
    items = [x.strip() for x in inner.split(",")]
    if all(_FLOW_WORD.fullmatch(x) and x.lower() not in _WORDS for x in items):
        return items
    return _NOT_FAST


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; ValueError on a repeated key (YAML and JSON readers differ on those)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("repeated key")
    return out


_JSON_UNIQUE = json.JSONDecoder(object_pairs_hook=_unique_pairs)  # built once: json.loads with options builds one per call


def _fast_scalar(v: str) -> Any:
    """Read one scalar the way YAML would, or _NOT_FAST when it might differ."""
    if not v:
        return None
    if v[0] in '"[{':
        try:
            value = _JSON_UNIQUE.decode(v)
        except ValueError:
            return _flow_list(v) if v[0] == "[" else _NOT_FAST
        if isinstance(value, dict):  # a JSON-style flow mapping, like the `enriched:` record
            ok = all(isinstance(x, str) for x in (*value, *value.values()))
        else:
            ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(x, str) for x in value))
        return value if ok and "\\" not in v else _NOT_FAST
    if _INT.fullmatch(v):
        return int(v)
    if _LEADING_ZERO.fullmatch(v):  # YAML 1.1: 0-led digits are octal when they can be, else a string
        return int(v, 8) if _OCTAL.fullmatch(v) else v
    if _FLOAT.fullmatch(v):
        return float(v)
    if _DATE.fullmatch(v):
        try:
            return date.fromisoformat(v)
        except ValueError:
            return _NOT_FAST
    if _PLAIN.fullmatch(v) and v.lower() not in _WORDS and " #" not in v:
        if not v[0].isdigit() or not _NUMBERISH.fullmatch(v):
            return v
    return _NOT_FAST


def _lenient(raw: str) -> dict[str, Any] | None:
    """Read `key: value` lines the way a forgiving reader would (first colon splits)."""
    data: dict[str, Any] = {}
    for line in raw.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _TOP_KEY.match(line)
        if not m:
            return None
        value = m.group(2).strip()
        parsed = _fast_scalar(value)
        if parsed is _NOT_FAST:
            try:
                parsed = yaml.load(value, Loader=_LOADER)
            except yaml.YAMLError:
                parsed = value
        data[m.group(1)] = value if isinstance(parsed, dict) and not value.startswith("{") else parsed
    return data


def as_str_list(value: Any) -> list[str]:
    """Read a tags/aliases value (list, comma string or scalar) as a list of strings."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    return [p.strip() for p in str(value).split(",") if p.strip()]


# ---------------------------------------------------------------- editing


def set_key(text: str, fm: Frontmatter | None, key: str, value: Any, newline: str) -> str:
    """Return text with one frontmatter key set, touching no other key's bytes."""
    if fm is None:
        block = f"---{newline}{_yaml_entry(key, value, None, newline)}---{newline}"
        return block + text
    if fm.format == "json":
        return _set_json_key(text, fm, key, value, newline)
    return _set_yaml_key(text, fm, key, value, newline)


def _yaml_key_span(text: str, fm: Frontmatter, key: str) -> tuple[int, int] | None:
    """Return the span of a top-level YAML key with its continuation lines."""
    found = _yaml_key_line(text, fm, key)
    if found is None:
        return None
    nl = text.find("\n", found, fm.body_end)
    pos = fm.body_end if nl == -1 else nl + 1
    while pos < fm.body_end:
        nl = text.find("\n", pos, fm.body_end)
        line_end = fm.body_end if nl == -1 else nl + 1
        line = text[pos:line_end].rstrip("\r\n")
        if line and not line[0].isspace() and not line.startswith(("- ", "#")):  # the next top-level key
            return found, pos
        pos = line_end
    return found, fm.body_end


@lru_cache(maxsize=64)
def _key_patterns(key: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """`key:` at a given offset, and after a newline (sre finds a literal start fast)."""
    entry = re.escape(key) + r"[ \t]*:"
    return re.compile(entry), re.compile("\n" + entry)


def _yaml_key_line(text: str, fm: Frontmatter, key: str) -> int | None:
    """Offset of the first frontmatter line that _TOP_KEY reads as `key`, or None."""
    if not _KEY_NAME.fullmatch(key):
        return None  # _TOP_KEY reads no such key
    at_start, after_newline = _key_patterns(key)
    if at_start.match(text, fm.body_start, fm.body_end):
        return fm.body_start
    m = after_newline.search(text, fm.body_start, fm.body_end)
    return m.start() + 1 if m else None


def _yaml_style(old: str) -> dict[str, Any]:
    """Describe how an existing YAML value was written (inline list, quotes, spacing)."""
    after = old.split(":", 1)[1] if ":" in old else ""
    first = after.splitlines()[0].strip() if after.splitlines() else ""
    style: dict[str, Any] = {"inline": first.startswith("["), "quote": '"'}
    if first.startswith("["):
        style["sep"] = ", " if re.search(r",\s", first) else ","
        style["quote"] = "'" if "'" in first and '"' not in first else ('"' if '"' in first else "")
    else:
        m = re.search(r"^([ \t]+)-", after, re.MULTILINE)
        style["indent"] = m.group(1) if m else "  "
        style["block"] = m is not None
        style["quote"] = '"' if re.search(r'-\s+"', after) else ""
    return style


_BARE_SCALAR = re.compile(r"[\w\-\u4e00-\u9fff/.]+")
_to_json = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(x, ensure_ascii=False), its encoder built once


def _scalar(value: Any, quote: str) -> str:
    """Render one scalar: JSON-quoted unless an unquoted style is safe."""
    s = str(value)
    if quote == "" and _BARE_SCALAR.fullmatch(s) and not s[0] in "-.":
        return s
    if quote == "'":
        return "'" + s.replace("'", "''") + "'"
    return _to_json(s)


def _yaml_entry(key: str, value: Any, old: str | None, nl: str) -> str:
    """Render `key: value` in the style of the old entry (or a sensible default)."""
    if isinstance(value, dict):
        return f"{key}: {_to_json(value)}{nl}"
    if isinstance(value, list):
        style: dict[str, Any] = _yaml_style(old) if old else {"inline": True, "sep": ", ", "quote": '"'}
        if style.get("block") and not style.get("inline"):
            items = "".join(f"{style['indent']}- {_scalar(v, style['quote'])}{nl}" for v in value)
            return f"{key}:{nl}{items}"
        sep = style.get("sep", ", ")
        return f"{key}: [{sep.join(_scalar(v, style.get('quote', chr(34))) for v in value)}]{nl}"
    return f"{key}: {_scalar(value, chr(34))}{nl}"


def _set_yaml_key(text: str, fm: Frontmatter, key: str, value: Any, nl: str) -> str:
    """Replace (or append) one key of a YAML frontmatter block."""
    span = _yaml_key_span(text, fm, key)
    if span is None:
        prefix = text[: fm.body_end]
        if prefix and not prefix.endswith(("\n", "\r")):
            prefix += nl
        return prefix + _yaml_entry(key, value, None, nl) + text[fm.body_end :]
    old = text[span[0] : span[1]]
    line_nl = re.search(r"\r\n|\n|\r", old)
    entry = _yaml_entry(key, value, old, line_nl.group(0) if line_nl else nl)
    if not line_nl:
        entry = entry.rstrip("\r\n")
    return text[: span[0]] + entry + text[span[1] :]


def _json_members(text: str, fm: Frontmatter) -> tuple[list[tuple[str, int, int, int]], int]:
    """Return top-level members (key, key_start, value_start, value_end) and the `}` offset."""
    dec = json.JSONDecoder()
    i = text.index("{", fm.body_start)
    members: list[tuple[str, int, int, int]] = []
    ws = re.compile(r"[\s,]*")
    i = ws.match(text, i + 1).end()  # type: ignore[union-attr]
    while text[i] != "}":
        key, kend = dec.raw_decode(text, i)
        colon = text.index(":", kend) + 1
        vstart = _WS.match(text, colon).end()  # type: ignore[union-attr]
        _, vend = dec.raw_decode(text, vstart)
        members.append((key, i, vstart, vend))
        i = ws.match(text, vend).end()  # type: ignore[union-attr]
    return members, i


def _set_json_key(text: str, fm: Frontmatter, key: str, value: Any, nl: str) -> str:
    """Replace (or add) one member of a JSON frontmatter object."""
    members, close = _json_members(text, fm)
    for name, kstart, vstart, vend in members:
        if name == key:
            indent = kstart - (text.rfind("\n", 0, kstart) + 1)
            dumped = json.dumps(value, ensure_ascii=False, indent=2).replace("\n", nl + " " * indent)
            return text[:vstart] + dumped + text[vend:]
    if not members:
        return text[:close] + json.dumps({key: value}, ensure_ascii=False)[1:-1] + text[close:]
    last_key_start, last_end = members[-1][1], members[-1][3]
    indent = last_key_start - (text.rfind("\n", 0, last_key_start) + 1)
    dumped = json.dumps(value, ensure_ascii=False, indent=2).replace("\n", nl + " " * indent)
    sep = "," + nl + " " * indent if "\n" in text[fm.body_start : close] else ", "
    addition = sep + json.dumps(key, ensure_ascii=False) + ": " + dumped
    return text[:last_end] + addition + text[last_end:]
