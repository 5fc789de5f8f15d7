"""Mojibake recovery: give back the UTF-8 text a Windows code page decode damaged.

Pure functions. Detection and the byte tables live in ``enrich.mojibake``, the character frequency tables
(the bundled ``enrich/data/cjk_freq.txt`` and a vault's own counts) in ``enrich.charfreq``, the cost of each
reading of a byte sequence in ``enrich.repaircost``; this module owns the search.

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

from collections.abc import Mapping
from dataclasses import dataclass

from .charfreq import load_default_freq
from .mojibake import (
    ALL_HOLES,
    CHAR_TO_BYTE,
    CP1252_ONLY,
    CP1254_EXTRA,
    RUN_RE,
    looks_mojibake,
)
from .repaircost import (
    BEAM,
    RUN_CACHE_CHARS,
    RUN_CACHE_SIZE,
    SEQ_LENGTH,
    CostTable,
    Options,
    reset_caches,
    table_for,
)

__all__ = ["RepairResult", "fix_mojibake"]

_MAX_INSERTIONS = 2  # dropped bytes re-inserted per character at most


@dataclass(frozen=True)
class RepairResult:
    """Outcome of a mojibake repair."""

    text: str
    changed_runs: int
    unresolved: int


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
    run: str, table: CostTable, holes: bytes, prune: bool = True
) -> tuple[str, int]:
    """Viterbi-decode one run of single-byte characters; return text, unresolved.

    From each position the lattice has a literal edge (keep the char, unresolved)
    and one edge per number of continuation bytes taken, re-inserting the rest
    (at most _MAX_INSERTIONS); only the BEAM cheapest states of a position are
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
        if len(here) > BEAM:
            states = sorted(here.items(), key=_state_cost)[:BEAM]
        else:
            states = list(here.items())
        length = SEQ_LENGTH[data[i]]
        avail = conts[i]
        if prune and length > avail and length - 1 - avail <= _MAX_INSERTIONS:
            end = i + 1 + avail
            seq = data[i:end]
            opts = cache.get(seq, _MISSING)
            if opts is _MISSING:
                opts = cache[seq] = table.search(seq, holes)
            if isinstance(opts, Options) and opts.lone[0] < table.dominant:
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
            if isinstance(opts, Options):
                _relax(lattice[end], i, states, opts, follow, prune)
    return _trace(lattice)


def _decode_cached(run: str, table: CostTable, holes: bytes) -> tuple[str, int]:
    """Decode one run; short runs (headings, labels) are memoised per table."""
    if len(run) > RUN_CACHE_CHARS:
        return _decode_run(run, table, holes)
    key = (run, holes)
    done = table.runs.get(key)
    if done is None:
        if len(table.runs) >= RUN_CACHE_SIZE:
            table.runs.clear()
        done = table.runs[key] = _decode_run(run, table, holes)
    return done


def _reset_caches(runs_only: bool = False) -> None:
    """Forget every derived table and memo, or only the decoded runs (benchmarks)."""
    reset_caches(runs_only)


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
    opts: Options,
    follow: dict[str, dict[str, float]],
    prune: bool,
) -> None:
    """Extend the beam at position i along one decoding edge into target.

    A char's step costs its unigram cost plus NO_PAIR, or less (the bigram
    mix) when the previous char has P(char | prev).  So the first cheapest
    state is the best predecessor of every char but those with a bigram, and
    only the BEAM cheapest options (plus ties, plus bigram chars) can reach
    the next beam: the others are skipped.  The entries written are the ones
    relaxing every state with every option would leave in the next beam.
    """
    first = _first(states) if len(states) > 1 else 0
    key0, state0 = states[first]
    cost0 = state0[0]
    chars, lone = opts.chars, opts.lone
    size = len(chars)
    limit = size
    if prune and size > BEAM:
        bound = cost0 + lone[BEAM - 1]
        limit = BEAM
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
    table = table_for(freq if freq else load_default_freq())
    holes = _holes_for(text)
    out: list[str] = []
    last = changed = unresolved = 0
    for match in RUN_RE.finditer(text):
        run = match.group()
        keep = _latin_in_word(text, match.start(), match.end())
        fixed, miss = (run, 0) if keep else _decode_cached(run, table, holes)
        out.append(text[last : match.start()] + fixed)
        last = match.end()
        changed += fixed != run
        unresolved += miss
    out.append(text[last:])
    return RepairResult("".join(out), changed, unresolved)
