"""The validated shape of one enrichment: key points, tags, related note ids."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

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
    def _points_are_plain_sentences(cls, points: list[str]) -> list[str]:
        """Reject bullets with newlines, headings, HTML, wikilinks or lists."""
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
    def _related_unique(cls, related: list[str]) -> list[str]:
        """Reject repeated ids."""
        if len(set(related)) != len(related):
            raise ValueError("related ids are repeated")
        return related


def enrichment_model(candidates: Sequence[str], own_id: str) -> type[Enrichment]:
    """Build a per-note model whose `related` items may only be candidate ids."""
    allowed = tuple(dict.fromkeys(c for c in candidates if c != own_id))
    if not allowed:
        item: Any = Literal["__none__"]
        max_related = 0
    else:
        item = Literal[allowed]
        max_related = 5
    return create_model(
        "NoteEnrichment",
        __base__=Enrichment,
        related=(list[item], Field(default_factory=list, max_length=max_related)),
    )


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return a strict-mode friendly JSON schema (all keys required, no extras)."""
    schema = model.model_json_schema()
    schema["additionalProperties"] = False
    schema["required"] = list(schema.get("properties", {}))
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    return schema
