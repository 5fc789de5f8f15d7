"""The provider-agnostic validated call: ask, parse, validate, re-ask, sanitise."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from enrich.errors import InvalidOutput, OutputTruncated
from enrich.providers.base import Message, Provider
from enrich.schema import Enrichment, OutputSpec

_FENCE_RE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n?(.*?)```", re.DOTALL)
_SPACES_RE = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_LEAD_MARKER_RE = re.compile(r"^(?:(?:[-*+\u2022\u2023\u25aa\u25cf\u2013\u2014]|\d{1,2}[.)])\s+)+")
_TRAIL_MARKER_RE = re.compile(r"[\s;,\u2022\u2023\u25aa\u25cf]+$")
_REASK = "Your answer was invalid: {errors}. Reply again with only the JSON object."
_MAX_ERRORS = 6


@dataclass
class CallResult:
    """A validated enrichment and what it cost."""

    value: Enrichment
    prompt_tokens: int
    completion_tokens: int
    calls: int
    mode: str


def extract_json(text: str) -> Any:
    """Return the first balanced top-level JSON object in text (fences and prose allowed)."""
    if not text or not text.strip():
        raise ValueError("empty answer")
    whole = _whole_object(text)
    if whole is not None:
        return whole
    fenced = [m.group(1) for m in _FENCE_RE.finditer(text)]
    last_reason = "no JSON object found"
    for chunk in [*fenced, text]:
        try:
            return _first_object(chunk)
        except ValueError as exc:
            last_reason = str(exc)
    raise ValueError(last_reason)


_JSON_LENIENT = json.JSONDecoder(strict=False)  # built once: json.loads with options builds one per call


def _whole_object(text: str) -> dict[str, Any] | None:
    """The answer when all of it is one JSON object (the usual case: no scan needed), else None."""
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")) or "```" in body:
        return None
    try:
        value = _JSON_LENIENT.decode(body)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _first_object(text: str) -> Any:
    """Scan text for top-level {...} spans and return the first that parses."""
    reason = "no JSON object found"
    for start, end in _object_spans(text):
        if end < 0:
            raise ValueError("JSON object is not closed (truncated answer?)")
        try:
            value = _JSON_LENIENT.decode(text[start:end])  # raw newlines in strings are tolerated
        except json.JSONDecodeError as exc:
            reason = f"invalid JSON: {exc.msg} at char {exc.pos}"
            continue
        if isinstance(value, dict):
            return value
    raise ValueError(reason)


def _object_spans(text: str) -> list[tuple[int, int]]:
    """Return (start, end) of each top-level brace group; end is -1 if it never closes."""
    spans: list[tuple[int, int]] = []
    depth, start, in_str, escaped = 0, -1, False, False
    for i, ch in enumerate(text):
        if depth and in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif depth and ch == '"':
            in_str = True
        elif ch == "{":
            start = i if depth == 0 else start
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append((start, i + 1))
    if depth:
        spans.append((start, -1))
    return spans


def clean_text(text: str) -> str:
    """Remove zero-width/control characters (newlines kept), collapse spaces, strip."""
    if text.isprintable():  # no control, format, private-use, surrogate or space characters but " "
        return text.strip() if "  " not in text else _SPACES_RE.sub(" ", text).strip()
    kept = []
    for ch in text:
        if ch in "\n\r":
            kept.append(ch)
        elif ch == "\t":
            kept.append(" ")
        elif unicodedata.category(ch) not in ("Cc", "Cf", "Co", "Cs"):
            kept.append(ch)
    return _SPACES_RE.sub(" ", "".join(kept)).strip()


def _clean_tree(data: Any) -> Any:
    """Apply clean_text to every string inside parsed JSON."""
    if isinstance(data, str):
        return clean_text(data)
    if isinstance(data, list):
        return [_clean_tree(item) for item in data]
    if isinstance(data, dict):
        return {key: _clean_tree(value) for key, value in data.items()}
    return data


def _clean_point(point: str) -> str:
    """Clean one key point and drop leading/trailing list markers."""
    text = _LEAD_MARKER_RE.sub("", clean_text(point))
    return _TRAIL_MARKER_RE.sub("", text).strip()


def sanitize(e: Enrichment, spec: OutputSpec, validated: Any = None) -> Enrichment:
    """Return a cleaned copy re-validated against spec (may raise pydantic.ValidationError).

    `validated` is the data e was validated from: when cleaning gives back exactly that data, e is returned,
    as validating the same data again gives the same result.
    """
    cleaned = {
        "key_points": [_clean_point(p) for p in e.key_points],
        "tags": [clean_text(t) for t in e.tags],
        "related": [clean_text(r) for r in e.related],
    }
    if validated is not None and validated == cleaned:
        return e
    return spec.validate({**e.model_dump(), **cleaned})


def _validation_errors(exc: ValidationError) -> list[str]:
    """Turn a pydantic error into short 'field.path: message' strings."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(part) for part in err["loc"]) or "answer"
        out.append(f"{loc}: {err['msg']}")
    return out


def parse_enrichment(text: str, spec: OutputSpec) -> Enrichment:
    """Extract, clean, validate and sanitise one answer (ValueError/ValidationError on failure)."""
    data = _clean_tree(extract_json(text))
    return sanitize(spec.validate(data), spec, data)


def _reask_messages(messages: list[Message], bad: str, errors: list[str]) -> list[Message]:
    """Return a new message list asking the model to fix its answer."""
    note = _REASK.format(errors="; ".join(errors[:_MAX_ERRORS]))
    return [*messages, {"role": "assistant", "content": bad}, {"role": "user", "content": note}]


async def call_validated(
    provider: Provider,
    messages: list[Message],
    spec: OutputSpec,
    *,
    max_tokens: int = 600,
    max_reasks: int = 2,
) -> CallResult:
    """Ask the provider for JSON matching spec, re-asking on invalid output."""
    base = [dict(m) for m in messages]
    convo = base
    prompt_tokens = completion_tokens = calls = 0
    errors: list[str] = []
    for _ in range(max_reasks + 1):
        done = await provider.complete(convo, spec.schema, max_tokens=max_tokens)
        calls += 1
        prompt_tokens += done.prompt_tokens
        completion_tokens += done.completion_tokens
        if done.finish_reason == "length":
            raise OutputTruncated(
                f"the model stopped at max_tokens={max_tokens} before finishing its answer",
                hint="raise --max-tokens or shorten the prompt",
            )
        try:
            value = parse_enrichment(done.text, spec)
        except ValidationError as exc:
            errors = _validation_errors(exc)
        except ValueError as exc:
            errors = [f"not a JSON object ({exc})"]
        else:
            return CallResult(value, prompt_tokens, completion_tokens, calls, done.mode)
        convo = _reask_messages(base, done.text, errors)
    raise InvalidOutput(
        f"the model's answer stayed invalid after {calls} call(s): {'; '.join(errors[:3])}",
        errors=errors,
    )
