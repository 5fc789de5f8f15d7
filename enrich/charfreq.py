"""Character frequency tables: the bundled CJK table and counts from a vault's own correct notes.

Mojibake recovery (``enrich.repair``) scores candidate characters with them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .mojibake import looks_mojibake
from .visible import looks_binary

__all__ = [
    "Tables", "bigram_tables", "char_frequencies", "load_default_freq", "merge_frequencies", "sample_plan",
    "sampled_frequencies",
]

def _normalise(counts: Mapping[str, float]) -> dict[str, float]:
    """Scale counts so they sum to one."""
    total = sum(v for v in counts.values() if v > 0)
    if total <= 0:
        return {}
    return {k: v / total for k, v in counts.items() if v > 0}


@dataclass(frozen=True)
class Tables:
    """The bundled table: raw single-char counts and P(next | prev) for bigrams."""

    chars: dict[str, float]
    follow: dict[str, dict[str, float]]
    top_follow: float  # the largest P(next | prev)


@lru_cache(maxsize=1)
def bigram_tables() -> Tables:
    """The bundled table (single chars and bigrams), read once."""
    raw = resources.files("enrich.data").joinpath("cjk_freq.txt").read_text("utf-8")
    chars: dict[str, float] = {}
    pairs: dict[str, float] = {}
    for line in raw.splitlines():
        key, _, count = line.partition("\t")
        if count.strip() and 1 <= len(key) <= 2:
            (chars if len(key) == 1 else pairs)[key] = float(count)
    follow: dict[str, dict[str, float]] = {}
    for pair, pair_count in pairs.items():
        if pair[0] in chars:
            follow.setdefault(pair[0], {})[pair[1]] = pair_count / chars[pair[0]]
    top = max((max(f.values()) for f in follow.values()), default=0.0)
    return Tables(chars, follow, top)


@lru_cache(maxsize=1)
def _default_freq() -> dict[str, float]:
    """Normalise the bundled single-char counts once."""
    return _normalise(bigram_tables().chars)


def load_default_freq() -> Mapping[str, float]:
    """Return the bundled CJK character frequencies (relative, cached)."""
    return _default_freq()


# char_frequencies counts at most about this many characters of note text.
_SAMPLE_CHARS = 200_000
# What char_frequencies does not count: ASCII and (Unicode) whitespace.
_NOT_COUNTED_RE = re.compile(r"[\x00-\x7f\s]+")


def sample_plan(lengths: list[int], budget: int = _SAMPLE_CHARS) -> tuple[list[int], int]:
    """Which texts char_frequencies counts (evenly spread, about budget chars in all) and the per-text cap."""
    total = sum(lengths)
    if total <= budget:
        return list(range(len(lengths))), total
    count = max(1, len(lengths) * budget // total)
    step = len(lengths) / count
    return [int(k * step) for k in range(count)], 2 * budget // count + 1


def char_frequencies(texts: Iterable[str]) -> dict[str, float]:
    """Build relative non-ASCII char frequencies, skipping mojibake/binary texts.

    Counts every text when they hold at most 200,000 characters in all; beyond
    that, evenly spread texts of about that size (each cut to twice its share),
    which is plenty for choosing between candidate characters and keeps a scan
    of thousands of notes cheap.
    """
    texts = list(texts)
    picked, cap = sample_plan([len(t) for t in texts])
    return sampled_frequencies([texts[i] for i in picked], cap)


def sampled_frequencies(picked: Iterable[str], cap: int) -> dict[str, float]:
    """char_frequencies of texts already chosen by sample_plan."""
    kept = [t[:cap] for t in picked if not looks_mojibake(t) and not looks_binary(t)]
    return _normalise(Counter(_NOT_COUNTED_RE.sub("", "".join(kept))))


def merge_frequencies(*tables: Mapping[str, float]) -> dict[str, float]:
    """Average several frequency tables, each normalised first."""
    merged: Counter[str] = Counter()
    for table in tables:
        merged.update(_normalise(table))
    return _normalise(merged)
