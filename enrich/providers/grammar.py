"""What the bundled 135M model may answer: a tightened schema, extractive key points, a GBNF grammar.

`local_schema` makes key points and tags patterns that always pass `enrich.schema` and related ids an
ordered, repeat-free choice; in extractive mode key points are chosen, in order, among the article's own
sentences (the tiny model otherwise copies the prompt's example). `build_grammar` turns the schema into
GBNF with llama-cpp-python's converter, fixed where it lets invalid JSON through.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Final

from enrich.errors import LLMError
from enrich.providers.base import Message

# Grammar-level limits for the tiny model (all stricter than enrich.schema).
KEY_POINT_MAX_CHARS: Final = 160
MAX_KEY_POINTS: Final = 4
MAX_TAGS: Final = 4
MAX_RELATED: Final = 3
# A key point: no quote, backslash (so no escapes, no newline), bracket, angle bracket,
# backtick or control char; it starts with a letter or digit (Latin, Cyrillic, CJK,
# kana, Hangul), so it cannot start with punctuation or a list/heading/quote marker.
_POINT_BANNED: Final = r'"\\\[\]<>`\x00-\x1F\x7F\x85\u2028\u2029'
_FIRST_CHAR: Final = r"[A-Za-z0-9\u00C0-\u024F\u0400-\u04FF\u3040-\u30FF\u4E00-\u9FFF\uAC00-\uD7AF]"
KEY_POINT_PATTERN: Final = (
    "^" + _FIRST_CHAR + "[^" + _POINT_BANNED + "]{7," + str(KEY_POINT_MAX_CHARS - 1) + "}$"
)
# A tag: ascii lowercase-kebab slug, at most 3 parts of 12 chars (<= 38 chars).
TAG_PATTERN: Final = r"^[a-z][a-z0-9]{1,11}(-[a-z0-9]{1,11}){0,2}$"

# Extractive mode: key points are chosen, in order, among the article's own sentences.
EXTRACTIVE: Final = True
MAX_SENTENCES: Final = 24
MIN_SENTENCES: Final = 3  # enrich.schema asks for at least 3 key points
_ARTICLE_RE: Final = re.compile(r"<<<ARTICLE\r?\n(.*?)\r?\nARTICLE>>>", re.DOTALL)
_SENTENCE_SPLIT_RE: Final = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])|\r?\n+")
_CLAUSE_SPLIT_RE: Final = re.compile(r"(?<=[,;:，；：、])\s*")
_INLINE_MARKUP_RE: Final = re.compile(
    r"!?\[([^\]]*)\]\([^)]*\)"  # Markdown link or image -> its text
    r"|<[^>]*>"  # HTML tag
    r"|\*\*|__|`"  # bold, inline code
    r"|\[\[(?:[^\]|]*\|)?|\]\]"  # wikilink brackets (alias kept)
)
_LINE_MARKER_RE: Final = re.compile(r"^\s*(?:[-*+>]|\d{1,2}[.)]|#{1,6})\s+")
_SENTENCE_OK_RE: Final = re.compile("^" + _FIRST_CHAR + "[^" + _POINT_BANNED + "]*$")

# JSON whitespace the grammar allows between tokens. llama-cpp-python's converter allows
# one optional space only. None keeps the converter's rule.
GRAMMAR_SPACE: str | None = None
_SPACE_RULE_RE: Final = re.compile(r"^space ::= .*$", re.MULTILINE)
# llama-cpp-python's JSON `char` rule lets raw control characters (a literal newline)
# into strings, which json.loads rejects; upstream llama.cpp excludes them.
_CHAR_RULE_RE: Final = re.compile(r'^char ::= \[\^"\\\\\]', re.MULTILINE)
_CHAR_RULE_FIXED: Final = r'char ::= [^"\\\x7F\x00-\x1F]'
_INVALID_RULE_CHARS_RE: Final = re.compile(r"[^a-zA-Z0-9-]+")


def local_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Tighten an enrichment JSON schema so the grammar keeps a 135M model valid."""
    out = copy.deepcopy(schema)
    props = out.get("properties", {})
    _tighten(props.get("key_points"), {"type": "string", "pattern": KEY_POINT_PATTERN}, MAX_KEY_POINTS)
    _tighten(props.get("tags"), {"type": "string", "pattern": TAG_PATTERN}, MAX_TAGS)
    _tighten(props.get("related"), None, MAX_RELATED)
    return out


def _tighten(prop: Any, items: dict[str, Any] | None, max_items: int) -> None:
    """Replace an array property's item schema and lower its maxItems in place."""
    if not isinstance(prop, dict) or prop.get("type") != "array":
        return
    if items is not None and "enum" not in prop.get("items", {}):
        prop["items"] = items
    current = prop.get("maxItems", max_items)
    prop["maxItems"] = max(min(current, max_items), prop.get("minItems", 0))


def article_text(messages: list[Message]) -> str | None:
    """The article between <<<ARTICLE and ARTICLE>>> in the first user message that has one."""
    for message in messages:
        found = _ARTICLE_RE.search(message["content"]) if message["role"] == "user" else None
        if found:
            return found.group(1)
    return None


def _plain(raw: str) -> str:
    """One line without list/heading markers and inline Markdown or HTML."""
    text = _INLINE_MARKUP_RE.sub(lambda m: m.group(1) or "", raw)
    return _LINE_MARKER_RE.sub("", text).strip()


def _fit(sentence: str) -> list[str]:
    """Split a too-long sentence at clause marks into pieces of at most KEY_POINT_MAX_CHARS."""
    if len(sentence) <= KEY_POINT_MAX_CHARS:
        return [sentence]
    pieces: list[str] = [""]
    for clause in _CLAUSE_SPLIT_RE.split(sentence):
        if len(pieces[-1]) + len(clause) + 1 <= KEY_POINT_MAX_CHARS:
            pieces[-1] = f"{pieces[-1]} {clause}".strip()
        else:
            pieces.append(clause)
    return [p.rstrip(",;:，；：、 ") for p in pieces]


def _usable(candidates: list[str], limit: int) -> list[str]:
    """Keep candidates that are valid key points, in order, without repeats."""
    out: list[str] = []
    seen: set[str] = set()
    for text in candidates:
        text = text.strip().rstrip(",;:，；：、")
        ok = 8 <= len(text) <= KEY_POINT_MAX_CHARS and _SENTENCE_OK_RE.match(text)
        if ok and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return out[:limit]


def article_sentences(text: str, limit: int = MAX_SENTENCES) -> list[str]:
    """Plain sentences of an article usable as key points; clauses when sentences are too few."""
    sentences = [p for raw in _SENTENCE_SPLIT_RE.split(text) for p in _fit(_plain(raw))]
    found = _usable(sentences, limit)
    if len(found) < MIN_SENTENCES:
        found = _usable([c for s in sentences for c in _clauses(s)], limit)
    return found


def _clauses(sentence: str, min_chars: int = 8) -> list[str]:
    """Split a sentence at clause marks, merging short clauses to at least min_chars."""
    out: list[str] = []
    buf = ""
    for clause in _CLAUSE_SPLIT_RE.split(sentence):
        buf += clause
        if len(buf.rstrip(",;:，；：、。.!?！？ ")) >= min_chars:
            out.append(buf)
            buf = ""
    if buf and out:
        out[-1] += buf
    elif buf:
        out.append(buf)
    return out


def _gbnf_literal(value: str) -> str:
    """A GBNF string literal that matches the JSON encoding of value."""
    encoded = json.dumps(value, ensure_ascii=False)
    escaped = encoded.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def ordered_choice(rule: str, values: list[str], min_items: int, max_items: int) -> str:
    """GBNF for a JSON array of min..max distinct values kept in the given order."""
    n = len(values)
    lines = [f"{rule}-v{i} ::= {_gbnf_literal(v)}" for i, v in enumerate(values)]
    tails: dict[tuple[int, int], str] = {}

    def tail(done: int, start: int) -> str:
        """Rule name for 'done items chosen, next index >= start' ('' when nothing may follow)."""
        if done >= max_items:
            return ""
        key = (done, start)
        if key not in tails:
            alts = [
                f'"," space {rule}-v{j} {tail(done + 1, j + 1)}'.rstrip()
                for j in range(start, n)
                if n - j >= min_items - done
            ]
            body = " | ".join(alts)
            if not alts:
                tails[key] = ""
                return ""
            tails[key] = f"{rule}-t{done}-{start}"
            lines.append(f"{tails[key]} ::= " + (f"( {body} )?" if done >= min_items else body))
        return tails[key]

    firsts = [f"{rule}-v{j} {tail(1, j + 1)}".rstrip() for j in range(n) if n - j >= min_items]
    inner = f"( {' | '.join(firsts)} )" if firsts and max_items > 0 else ""
    if inner and min_items == 0:
        inner += "?"
    lines.insert(0, f'{rule} ::= "[" space {inner} "]" space'.replace("  ", " "))
    return "\n".join(lines)


def _order_enum_arrays(gbnf: str, schema: dict[str, Any]) -> str:
    """Replace the rule of every top-level enum array with an ordered, repeat-free choice."""
    for name, prop in schema.get("properties", {}).items():
        values = prop.get("items", {}).get("enum") if isinstance(prop, dict) else None
        if prop.get("type") != "array" or not values or not all(isinstance(v, str) for v in values):
            continue
        rule = _INVALID_RULE_CHARS_RE.sub("-", name)
        lo, hi = prop.get("minItems", 0), prop.get("maxItems", len(values))
        if lo > len(values):
            continue
        found = re.search(rf"^{re.escape(rule)} ::= .*$", gbnf, re.MULTILINE)
        if found:
            ordered = ordered_choice(rule, values, lo, min(hi, len(values)))
            gbnf = gbnf[: found.start()] + ordered + gbnf[found.end() :]
    return gbnf


def build_grammar(schema: dict[str, Any]) -> str:
    """GBNF for a JSON schema: llama-cpp-python's converter plus ordered enum arrays."""
    from llama_cpp import llama_grammar

    try:
        gbnf = str(llama_grammar.json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises AssertionError/KeyError/...
        raise LLMError(f"the JSON schema cannot be turned into a grammar: {exc}") from exc
    gbnf = _CHAR_RULE_RE.sub(lambda _: _CHAR_RULE_FIXED, gbnf)
    if GRAMMAR_SPACE is not None:
        gbnf = _SPACE_RULE_RE.sub(lambda _: f"space ::= {GRAMMAR_SPACE}", gbnf)
    return _order_enum_arrays(gbnf, schema)


def extractive_schema(schema: dict[str, Any], sentences: list[str]) -> dict[str, Any]:
    """Make key points a choice among the article's sentences (when there are enough)."""
    prop = schema.get("properties", {}).get("key_points")
    if not isinstance(prop, dict) or len(sentences) < prop.get("minItems", 0) or not sentences:
        return schema
    out = copy.deepcopy(schema)
    out["properties"]["key_points"]["items"] = {"type": "string", "enum": sentences}
    return out
