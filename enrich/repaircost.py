"""What a damaged byte sequence can stand for, and what each reading costs (the scoring half of enrich.repair).

Costs are negative log-probabilities from a character frequency table (enrich.charfreq), interpolated with
P(char | previous char) from the bundled bigrams; they and the ranked readings of each byte sequence are
computed once per table and hole set and cached, since a vault's notes share most of their sequences.
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache

from .charfreq import bigram_tables

_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_BIGRAM_WEIGHT = 0.75  # interpolation weight of P(char | previous char)
_SPREAD = 12.0  # keep candidates within this many nats of the best one
BEAM = 8  # lattice states kept per byte position
NO_PAIR = -math.log(1 - _BIGRAM_WEIGHT)  # extra cost of a char without bigram
_TABLE_CACHE_SIZE = 4  # frequency tables whose derived costs are kept
_OPTIONS_CACHE_SIZE = 100_000  # byte sequences per table and hole set
RUN_CACHE_SIZE = 4096  # decoded runs memoised per table
RUN_CACHE_CHARS = 64  # only runs up to this long are memoised


@lru_cache(maxsize=65536)
def fallback_penalty(char: str) -> float:
    """Extra cost (over the rarest known char) of a char missing from the table."""
    cp = ord(char)
    if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
        return math.inf
    if 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF:
        return 2.0
    if unicodedata.category(char) == "So":
        return 3.0 if 0x1F300 <= cp <= 0x1FAFF else 5.0  # emoji first, then symbols
    return 4.0 if cp < 0x10000 else 7.0  # rare astral letters/digits last


def _seq_length(lead: int) -> int:
    """Length of a UTF-8 sequence starting with lead (0 if not a lead)."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


SEQ_LENGTH = tuple(_seq_length(b) for b in range(256))


def _candidates(seq: bytes, length: int, holes: bytes) -> Iterable[bytes]:
    """Yield seq with (length - len(seq)) hole bytes inserted after the lead."""
    missing = length - len(seq)
    if missing == 0:
        yield seq
        return
    for where in itertools.combinations(range(1, length), missing):
        for fill in itertools.product(holes, repeat=missing):
            yield _interleave(seq, where, fill)


def _interleave(seq: bytes, where: tuple[int, ...], fill: tuple[int, ...]) -> bytes:
    """Build a sequence with fill bytes at positions where, seq elsewhere."""
    out = bytearray(seq)
    for pos, byte in zip(where, fill):  # where is increasing
        out.insert(pos, byte)
    return bytes(out)


@lru_cache(maxsize=65536)
def candidate_chars(seq: bytes, holes: bytes) -> tuple[str, ...]:
    """Distinct chars whose UTF-8 form is seq plus re-inserted hole bytes, in search order."""
    found: dict[str, None] = {}
    for cand in _candidates(seq, SEQ_LENGTH[seq[0]], holes):
        try:
            found.setdefault(cand.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return tuple(found)


def _mix(cost: float, cond: float) -> float:
    """Cost of a char interpolating its unigram cost and P(char | prev)."""
    return -math.log((1 - _BIGRAM_WEIGHT) * math.exp(-cost) + _BIGRAM_WEIGHT * cond)


class Options:
    """The cheapest chars for one byte sequence, cheapest first."""

    __slots__ = ("_pairs", "chars", "costs", "index", "lone")

    def __init__(self, ranked: list[tuple[str, float]]) -> None:
        """Keep chars, their unigram costs and their costs without a bigram."""
        self.chars = tuple(c for c, _ in ranked)
        self.costs = tuple(v for _, v in ranked)
        self.lone = tuple(v + NO_PAIR for _, v in ranked)
        self.index = {c: j for j, c in enumerate(self.chars)}
        self._pairs: dict[str, tuple[tuple[int, float], ...]] = {}

    def pairs(self, follow: dict[str, float], prev: str) -> tuple[tuple[int, float], ...]:
        """(index, bigram step cost) of the options that follow prev in a bigram."""
        found = self._pairs.get(prev)
        if found is None:
            index = self.index
            hits = [(index[c], cond) for c, cond in follow.items() if c in index]
            found = self._pairs[prev] = tuple(
                sorted((j, _mix(self.costs[j], cond)) for j, cond in hits)
            )
        return found


class CostTable:
    """Costs (negative log-probabilities) derived from one frequency table, cached."""

    def __init__(self, freq: dict[str, float]) -> None:
        """Prepare costs from a frequency table (a private copy), normalised lazily."""
        self._freq = freq
        positive = [v for v in freq.values() if v > 0]
        self._total = sum(positive)  # as _normalise sums, so v / total is the same
        self.floor = -math.log(min(positive) / self._total if positive else 1e-9)
        self.literal = self.floor + 6.0
        tables = bigram_tables()
        self.follow = tables.follow
        # No step costs less than this (a bigram mix with the largest P(next | prev)).
        top = tables.top_follow
        least = min(0.0, -math.log((1 - _BIGRAM_WEIGHT) + _BIGRAM_WEIGHT * top))
        # An edge cheaper than this beats any path through one more literal.
        self.dominant = self.literal + least
        self._options: dict[bytes, dict[bytes, Options | None]] = {}
        self._costs: dict[str, float] = {}
        self.runs: dict[tuple[str, bytes], tuple[str, int]] = {}  # decoded short runs (enrich.repair)

    def cost(self, char: str) -> float:
        """Return the unigram cost of emitting char."""
        cost = self._costs.get(char)
        if cost is None:
            p = self._freq.get(char)
            if p is not None and p > 0:
                cost = -math.log(p / self._total)
            else:
                cost = self.floor + fallback_penalty(char)
            self._costs[char] = cost
        return cost

    def options(self, holes: bytes) -> dict[bytes, Options | None]:
        """The (growing) cache of options per byte sequence for one hole set."""
        cache = self._options.get(holes)
        if cache is None or len(cache) > _OPTIONS_CACHE_SIZE:
            cache = self._options[holes] = {}
        return cache

    def search(self, seq: bytes, holes: bytes) -> Options | None:
        """Best chars whose UTF-8 form is seq plus re-inserted dropped bytes."""
        found = [(c, self.cost(c)) for c in candidate_chars(seq, holes)]
        ranked = sorted((o for o in found if o[1] < math.inf), key=lambda o: o[1])
        if not ranked:
            return None
        return Options([o for o in ranked if o[1] <= ranked[0][1] + _SPREAD])

    def forget_runs(self) -> None:
        """Drop the memoised runs."""
        self.runs.clear()


_TABLES: dict[int, tuple[Mapping[str, float], dict[str, float], CostTable]] = {}


def table_for(freq: Mapping[str, float]) -> CostTable:
    """The derived costs of freq, reused while the same unchanged table is passed."""
    hit = _TABLES.get(id(freq))
    if hit is not None and hit[0] is freq and hit[1] == freq:
        return hit[2]
    copy = dict(freq)
    table = CostTable(copy)
    if len(_TABLES) >= _TABLE_CACHE_SIZE:
        del _TABLES[next(iter(_TABLES))]
    _TABLES[id(freq)] = (freq, copy, table)
    return table


def reset_caches(runs_only: bool = False) -> None:
    """Forget every derived table and memo, or only the decoded runs (benchmarks)."""
    if runs_only:
        for _, _, table in _TABLES.values():
            table.forget_runs()
        return
    _TABLES.clear()
    candidate_chars.cache_clear()
    fallback_penalty.cache_clear()
