"""The validated shape of one enrichment: key points, tags, related note ids."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

TAG_RE = re.compile(r"^[a-z0-9\u4e00-\u9fff]+(?:-[a-z0-9\u4e00-\u9fff]+)*$")
_MARKUP_RE = re.compile(r"(\[\[|\]\]|<[a-zA-Z/!][^>]*>|^\s*#{1,6}\s|^\s*[-*+]\s|^\s*>|```|!\[)")
MAX_POINT_CHARS = 300


class Enrichment(BaseModel):
    """What the model must return for one note."""

    model_config = ConfigDict(extra="forbid")

    key_points: list[Annotated[str, Field(min_length=8, max_length=MAX_POINT_CHARS)]] = Field(
        min_length=3, max_length=5
    )
    tags: list[Annotated[str, Field(max_length=40)]] = Field(min_length=1, max_length=6)
    related: list[str] = Field(default_factory=list, max_length=5)

    @field_validator("key_points")
    @classmethod
    def _points_are_plain_sentences(cls, points: list[str], info: ValidationInfo) -> list[str]:
        """Reject bullets with newlines, headings, HTML, wikilinks or lists, or copied from the prompt's example."""
        copied = (info.context or {}).get("example_points") or frozenset()
        clean: list[str] = []
        for point in points:
            text = point.strip()
            if not text:
                raise ValueError("a key point is empty")
            if "\n" in text or "\r" in text:
                raise ValueError(f"key point contains a newline: {text[:60]!r}")
            if _MARKUP_RE.search(text):
                raise ValueError(f"key point contains markup or a link: {text[:60]!r}")
            if len(text) > MAX_POINT_CHARS:
                raise ValueError(f"key point longer than {MAX_POINT_CHARS} characters")
            if text.casefold() in copied:
                raise ValueError(f"key point copies the prompt's example instead of the article: {text[:60]!r}")
            clean.append(text)
        if len({p.casefold() for p in clean}) != len(clean):
            raise ValueError("key points repeat each other")
        return clean

    @field_validator("tags")
    @classmethod
    def _tags_are_slugs(cls, tags: list[str]) -> list[str]:
        """Reject tags that are not lowercase-kebab slugs, and duplicates."""
        out: list[str] = []
        for tag in tags:
            t = tag.strip().lstrip("#")
            if not TAG_RE.match(t) or len(t) > 40:
                raise ValueError(f"tag {tag!r} is not a lowercase-kebab slug")
            if t in out:
                raise ValueError(f"tag {t!r} is repeated")
            out.append(t)
        return out

    @field_validator("related")
    @classmethod
    def _related_allowed(cls, related: list[str], info: ValidationInfo) -> list[str]:
        """Reject repeated ids, and ids outside the allowed candidates given in the context."""
        if len(set(related)) != len(related):
            raise ValueError("related ids are repeated")
        allowed = (info.context or {}).get("allowed")
        if allowed is None:
            return related
        if related and not allowed:
            raise ValueError("no candidate notes were offered: related must be empty")
        unknown = [r for r in related if r not in allowed]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not one of the candidate ids: {', '.join(allowed[:20])}")
        return related


@dataclass(frozen=True)
class OutputSpec:
    """What one note's answer must match: the shared model plus its allowed related ids.

    `schema` shares all but its `related` part with every other spec: copy it before changing it.
    """

    allowed: tuple[str, ...]
    schema: dict[str, Any] = field(compare=False, repr=False)
    example_points: frozenset[str] = frozenset()  # casefolded key points of the prompt's example answer

    def validate(self, data: Any) -> Enrichment:
        """Validate parsed JSON (pydantic.ValidationError on failure)."""
        return Enrichment.model_validate(data, context=self._context())

    def validate_json(self, text: str | bytes) -> Enrichment:
        """Validate a JSON document."""
        return Enrichment.model_validate_json(text, context=self._context())

    def _context(self) -> dict[str, Any]:
        """What the validators check against."""
        return {"allowed": self.allowed, "example_points": self.example_points}

    def keep_allowed(self, data: dict[str, Any]) -> dict[str, Any]:
        """A copy of an answer whose related ids not (or no longer) offered are dropped."""
        related = [r for r in data.get("related") or [] if r in self.allowed]
        return {**data, "related": related}


def output_spec(candidates: Sequence[str], own_id: str, example_points: Iterable[str] = ()) -> OutputSpec:
    """The spec for a note whose `related` items may only be candidate ids (never itself)."""
    allowed = tuple(dict.fromkeys(c for c in candidates if c != own_id))
    base = _base_schema()  # shared by every spec: new dicts only on the path to `related` (readers copy to edit)
    schema = {**base, "properties": {**base["properties"], "related": _related_schema(allowed)}}
    return OutputSpec(allowed, schema, frozenset(p.strip().casefold() for p in example_points))


def _related_schema(allowed: tuple[str, ...]) -> dict[str, Any]:
    """The JSON schema of `related`: an array of candidate ids (none allowed: always empty)."""
    items: dict[str, Any] = {"enum": list(allowed), "type": "string"} if allowed else {"const": "__none__", "type": "string"}
    return {"items": items, "maxItems": 5 if allowed else 0, "title": "Related", "type": "array"}


@cache
def _base_schema() -> dict[str, Any]:
    """The strict JSON schema of Enrichment, built once (output_spec shares it: never edit it in place)."""
    schema = json_schema(Enrichment)
    schema["title"] = "NoteEnrichment"
    schema.pop("description", None)
    return schema


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return a strict-mode friendly JSON schema (all keys required, no extras)."""
    schema = model.model_json_schema()
    schema["additionalProperties"] = False
    schema["required"] = list(schema.get("properties", {}))
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    return schema
