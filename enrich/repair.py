"""Mojibake recovery: give back the UTF-8 text a Windows code page decode damaged.

Pure functions. Detection and the byte tables live in ``enrich.mojibake``, the character frequency tables
(the bundled ``enrich/data/cjk_freq.txt`` and a vault's own counts) in ``enrich.charfreq``.

Mojibake model: UTF-8 bytes were decoded with a Windows code page and the bytes
it cannot show were silently dropped: cp1252 drops 81 8D 8F 90 9D; cp1254
(Turkish, what the seed really went through: it shows 'ğ' for F0 and never
'Ž'/'ž') also drops 8E 9E; and soft hyphens (AD) got stripped as invisible
(策 = E7 AD 96 appears as 'ç–').  Every non-ASCII character maps back to one
byte, so a run of them gives back the UTF-8 stream minus the dropped
continuation bytes.  Bytes seen in the text itself are never candidates.

Recovery is a Viterbi pass over byte positions of each non-ASCII run: from a
lead byte, take the continuation bytes present and re-insert up to two dropped
ones at every position; each valid character costs -log P(char), interpolated
with P(char | previous char) from the bigrams of the bundled table (needed for
characters that differ only in a dropped byte: 信息/信每, 链接/链来, 原文/城文).
A byte that fits nothing is kept as it was and counted as unresolved.

Speed (~2 ms for a 2 KB note, was ~35 ms; see bench/bench_repair.py): costs and
the ranked candidates of each byte sequence are computed once per frequency
table (cached by identity, checked for changes on each call) and short runs are
memoised; a lead followed by its continuation bytes skips the edges that would
need a literal (provably worse), and an edge relaxes only the options that can
reach the next beam.  The search returns what the plain search returns
(tests/test_repair.py compares both).  char_frequencies counts a spread sample
of about 200,000 characters, so a vault of thousands of notes costs ~40 ms.

Measured (tests/test_repair.py): the seed note is recovered exactly (all five
headings, every Chinese phrase, the smart quotes and the emoji; 0 unresolved),
also with the vault's own frequencies merged in; the 32 readable vault-sample
notes mojibaked as cp1252 and cp1254 come back at 99.6 % of non-ASCII chars;
random strings of frequency-weighted common CJK chars + ASCII at 97.5 %
(cp1252; no word context there, so near-homographs fall back to unigrams).
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from .charfreq import bigram_tables, load_default_freq
from .mojibake import (
    ALL_HOLES,
    CHAR_TO_BYTE,
    CP1252_ONLY,
    CP1254_EXTRA,
    RUN_RE,
    looks_mojibake,
)

__all__ = ["RepairResult", "fix_mojibake"]

_MAX_INSERTIONS = 2  # dropped bytes re-inserted per character at most


@dataclass(frozen=True)
class RepairResult:
    """Outcome of a mojibake repair."""

    text: str
    changed_runs: int
    unresolved: int


# ------------------------------------------------------------------- scoring

_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_BIGRAM_WEIGHT = 0.75  # interpolation weight of P(char | previous char)
_SPREAD = 12.0  # keep candidates within this many nats of the best one
_BEAM = 8  # lattice states kept per byte position
_NO_PAIR = -math.log(1 - _BIGRAM_WEIGHT)  # extra cost of a char without bigram
_TABLE_CACHE_SIZE = 4  # frequency tables whose derived costs are kept
_OPTIONS_CACHE_SIZE = 100_000  # byte sequences per table and hole set
_RUN_CACHE_SIZE = 4096  # decoded runs memoised per table
_RUN_CACHE_CHARS = 64  # only runs up to this long are memoised


@lru_cache(maxsize=65536)
def _fallback_penalty(char: str) -> float:
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


_SEQ_LENGTH = tuple(_seq_length(b) for b in range(256))


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
def _candidate_chars(seq: bytes, holes: bytes) -> tuple[str, ...]:
    """Distinct chars whose UTF-8 form is seq plus re-inserted hole bytes, in search order."""
    found: dict[str, None] = {}
    for cand in _candidates(seq, _SEQ_LENGTH[seq[0]], holes):
        try:
            found.setdefault(cand.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return tuple(found)


def _mix(cost: float, cond: float) -> float:
    """Cost of a char interpolating its unigram cost and P(char | prev)."""
    return -math.log((1 - _BIGRAM_WEIGHT) * math.exp(-cost) + _BIGRAM_WEIGHT * cond)


class _Options:
    """The cheapest chars for one byte sequence, cheapest first."""

    __slots__ = ("_pairs", "chars", "costs", "index", "lone")

    def __init__(self, ranked: list[tuple[str, float]]) -> None:
        """Keep chars, their unigram costs and their costs without a bigram."""
        self.chars = tuple(c for c, _ in ranked)
        self.costs = tuple(v for _, v in ranked)
        self.lone = tuple(v + _NO_PAIR for _, v in ranked)
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


class _Table:
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
        self._options: dict[bytes, dict[bytes, _Options | None]] = {}
        self._costs: dict[str, float] = {}
        self._runs: dict[tuple[str, bytes], tuple[str, int]] = {}

    def cost(self, char: str) -> float:
        """Return the unigram cost of emitting char."""
        cost = self._costs.get(char)
        if cost is None:
            p = self._freq.get(char)
            if p is not None and p > 0:
                cost = -math.log(p / self._total)
            else:
                cost = self.floor + _fallback_penalty(char)
            self._costs[char] = cost
        return cost

    def options(self, holes: bytes) -> dict[bytes, _Options | None]:
        """The (growing) cache of options per byte sequence for one hole set."""
        cache = self._options.get(holes)
        if cache is None or len(cache) > _OPTIONS_CACHE_SIZE:
            cache = self._options[holes] = {}
        return cache

    def search(self, seq: bytes, holes: bytes) -> _Options | None:
        """Best chars whose UTF-8 form is seq plus re-inserted dropped bytes."""
        found = [(c, self.cost(c)) for c in _candidate_chars(seq, holes)]
        ranked = sorted((o for o in found if o[1] < math.inf), key=lambda o: o[1])
        if not ranked:
            return None
        return _Options([o for o in ranked if o[1] <= ranked[0][1] + _SPREAD])

    def decode(self, run: str, holes: bytes) -> tuple[str, int]:
        """Decode one run; short runs (headings, labels) are memoised."""
        if len(run) > _RUN_CACHE_CHARS:
            return _decode_run(run, self, holes)
        key = (run, holes)
        done = self._runs.get(key)
        if done is None:
            if len(self._runs) >= _RUN_CACHE_SIZE:
                self._runs.clear()
            done = self._runs[key] = _decode_run(run, self, holes)
        return done

    def forget_runs(self) -> None:
        """Drop the memoised runs."""
        self._runs.clear()


_TABLES: dict[int, tuple[Mapping[str, float], dict[str, float], _Table]] = {}


def _table_for(freq: Mapping[str, float]) -> _Table:
    """The derived costs of freq, reused while the same unchanged table is passed."""
    hit = _TABLES.get(id(freq))
    if hit is not None and hit[0] is freq and hit[1] == freq:
        return hit[2]
    copy = dict(freq)
    table = _Table(copy)
    if len(_TABLES) >= _TABLE_CACHE_SIZE:
        del _TABLES[next(iter(_TABLES))]
    _TABLES[id(freq)] = (freq, copy, table)
    return table


def _reset_caches(runs_only: bool = False) -> None:
    """Forget every derived table and memo, or only the decoded runs (benchmarks)."""
    if runs_only:
        for _, _, table in _TABLES.values():
            table.forget_runs()
        return
    _TABLES.clear()
    _candidate_chars.cache_clear()
    _fallback_penalty.cache_clear()


# ------------------------------------------------------------------- decoding

# A lattice state, keyed by its last decoded char ("" = no context):
# (cost, previous position, previous key, emitted text, unresolved).
_State = tuple[float, int, str, str, int]
_TO_LATIN1 = str.maketrans({c: chr(b) for c, b in CHAR_TO_BYTE.items()})


def _state_cost(item: tuple[str, _State]) -> float:
    """Sort key of a lattice state."""
    return item[1][0]


def _continuations(data: bytes) -> list[int]:
    """For each position, how many continuation bytes directly follow it."""
    out = [0] * len(data)
    count = 0
    for i in range(len(data) - 1, -1, -1):
        out[i] = count
        count = count + 1 if 0x80 <= data[i] <= 0xBF else 0
    return out


def _decode_run(
    run: str, table: _Table, holes: bytes, prune: bool = True
) -> tuple[str, int]:
    """Viterbi-decode one run of single-byte characters; return text, unresolved.

    From each position the lattice has a literal edge (keep the char, unresolved)
    and one edge per number of continuation bytes taken, re-inserting the rest
    (at most _MAX_INSERTIONS); only the _BEAM cheapest states of a position are
    extended.  Leads are never dropped, so in real mojibake a lead is followed
    by at most the continuation bytes of its own char: when the edge taking all
    of them costs less than one literal, every other edge from that lead (which
    must leave a continuation byte, or the lead itself, as a literal) is
    dominated and is not built.  prune=False builds every edge and relaxes
    every option (the plain search, kept for tests).
    """
    data = run.translate(_TO_LATIN1).encode("latin-1")
    n = len(data)
    conts = _continuations(data)
    cache = table.options(holes)
    follow = table.follow
    literal = table.literal
    lattice: list[dict[str, _State]] = [{} for _ in range(n + 1)]
    lattice[0][""] = (0.0, -1, "", "", 0)
    for i in range(n):
        here = lattice[i]
        if not here:
            continue
        if len(here) > _BEAM:
            states = sorted(here.items(), key=_state_cost)[:_BEAM]
        else:
            states = list(here.items())
        length = _SEQ_LENGTH[data[i]]
        avail = conts[i]
        if prune and length > avail and length - 1 - avail <= _MAX_INSERTIONS:
            end = i + 1 + avail
            seq = data[i:end]
            opts = cache.get(seq, _MISSING)
            if opts is _MISSING:
                opts = cache[seq] = table.search(seq, holes)
            if isinstance(opts, _Options) and opts.lone[0] < table.dominant:
                _relax(lattice[end], i, states, opts, follow, prune)
                continue
        first = _first(states)
        key0, state0 = states[first]
        target = lattice[i + 1]
        cost = state0[0] + literal
        old = target.get("")
        if old is None or cost < old[0]:
            target[""] = (cost, i, key0, run[i], 1)
        if not length:
            continue
        for present in range(
            max(0, length - 1 - _MAX_INSERTIONS), min(length - 1, avail) + 1
        ):
            end = i + 1 + present
            seq = data[i:end]
            opts = cache.get(seq, _MISSING)
            if opts is _MISSING:
                opts = cache[seq] = table.search(seq, holes)
            if isinstance(opts, _Options):
                _relax(lattice[end], i, states, opts, follow, prune)
    return _trace(lattice)


_MISSING: object = object()


def _first(states: list[tuple[str, _State]]) -> int:
    """Index of the first cheapest state."""
    first = 0
    for order in range(1, len(states)):
        if states[order][1][0] < states[first][1][0]:
            first = order
    return first


def _relax(
    target: dict[str, _State],
    i: int,
    states: list[tuple[str, _State]],
    opts: _Options,
    follow: dict[str, dict[str, float]],
    prune: bool,
) -> None:
    """Extend the beam at position i along one decoding edge into target.

    A char's step costs its unigram cost plus _NO_PAIR, or less (the bigram
    mix) when the previous char has P(char | prev).  So the first cheapest
    state is the best predecessor of every char but those with a bigram, and
    only the _BEAM cheapest options (plus ties, plus bigram chars) can reach
    the next beam: the others are skipped.  The entries written are the ones
    relaxing every state with every option would leave in the next beam.
    """
    first = _first(states) if len(states) > 1 else 0
    key0, state0 = states[first]
    cost0 = state0[0]
    chars, lone = opts.chars, opts.lone
    size = len(chars)
    limit = size
    if prune and size > _BEAM:
        bound = cost0 + lone[_BEAM - 1]
        limit = _BEAM
        while limit < size and cost0 + lone[limit] <= bound:
            limit += 1
    hits: dict[int, list[tuple[float, int, str]]] = {}
    for order, (key, state) in enumerate(states):
        fol = follow.get(key)
        if fol is not None:
            for j, step in opts.pairs(fol, key):
                hits.setdefault(j, []).append((state[0] + step, order, key))
    if not hits:
        for j in range(limit):
            char = chars[j]
            cost = cost0 + lone[j]
            old = target.get(char)
            if old is None or cost < old[0]:
                target[char] = (cost, i, key0, char, 0)
        return
    fol0 = follow.get(key0)
    for j in sorted(set(range(limit)) | hits.keys()):
        char = chars[j]
        found = hits.get(j)
        if found is None:
            cost, key = cost0 + lone[j], key0
        else:
            pick = min(found)
            if fol0 is None or char not in fol0:
                pick = min(pick, (cost0 + lone[j], first, key0))
            cost, _, key = pick
        old = target.get(char)
        if old is None or cost < old[0]:
            target[char] = (cost, i, key, char, 0)


def _trace(lattice: list[dict[str, _State]]) -> tuple[str, int]:
    """Follow back-pointers from the cheapest final state."""
    parts: list[str] = []
    unresolved = 0
    pos = len(lattice) - 1
    key = min(lattice[pos], key=lambda k: lattice[pos][k][0])
    while pos > 0:
        _, pos, key, text, miss = lattice[pos][key]
        parts.append(text)
        unresolved += miss
    return "".join(reversed(parts)), unresolved


def _holes_for(text: str) -> bytes:
    """Dropped-byte candidates: undefined bytes not seen in the text itself."""
    chars = set(text)
    seen = {CHAR_TO_BYTE[c] for c in chars if c in CHAR_TO_BYTE}
    if chars & CP1252_ONLY and not chars & CP1254_EXTRA.keys():
        seen.update(b"\x8e\x9e")  # a cp1252 decode: 8E and 9E were kept as Ž ž
    return bytes(b for b in ALL_HOLES if b not in seen)


def _latin_in_word(text: str, start: int, end: int) -> bool:
    """Tell whether text[start:end] is one accented letter inside an ASCII word."""
    if end - start != 1 or not text[start].isalpha():
        return False
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    return (before.isascii() and before.isalnum()) or (
        after.isascii() and after.isalnum()
    )


def fix_mojibake(
    text: str, freq: Mapping[str, float] | None = None
) -> RepairResult | None:
    """Recover UTF-8 text decoded as cp1252/cp1254 with undefined bytes dropped."""
    if not looks_mojibake(text):
        return None
    table = _table_for(freq if freq else load_default_freq())
    holes = _holes_for(text)
    out: list[str] = []
    last = changed = unresolved = 0
    for match in RUN_RE.finditer(text):
        run = match.group()
        keep = _latin_in_word(text, match.start(), match.end())
        fixed, miss = (run, 0) if keep else table.decode(run, holes)
        out.append(text[last : match.start()] + fixed)
        last = match.end()
        changed += fixed != run
        unresolved += miss
    out.append(text[last:])
    return RepairResult("".join(out), changed, unresolved)
