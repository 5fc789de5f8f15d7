"""Generate enrich/data/cjk_freq.txt, the character table used by enrich.repair.

Run once at dev time (the output is committed):

    python3 bench/make_cjk_freq.py                 # from jieba's dict.txt
    python3 bench/make_cjk_freq.py --vault DIR     # fallback: count a vault's notes

Source: jieba's bundled ``dict.txt`` ("word count pos" per line, ~350k words).
Each word's count is added to every CJK character in it, and the top N
characters are kept.  Punctuation and a few emoji do not occur in that
dictionary, so they get pseudo-counts: a share of the CJK total chosen from
typical Chinese web text (fullwidth comma about 5 %, full stop 3 %, ...).
These only need to be of the right order: the table is used to choose between
candidate characters when re-inserting dropped bytes, not as a language model.

Bigrams: a unigram table cannot tell apart characters that differ only in a
dropped byte (息/每 for a lost 0x81 or 0x8F, 接/来, 原/城, 量/重, 反/后, ...).
So the file also holds ~6,000 two-character lines ``ab<TAB>count``:
word-internal bigrams (summed jieba word counts) with an "at risk" character
(one that loses to another character of its dropped-byte group, or wins by
less than MARGIN, since a vault's own counts may flip it), most frequent first,
each with its competing bigrams.  All counts are divided by 10 (--scale) so
that the whole file stays under 100 KB.

Output: UTF-8, ``key<TAB>count`` per line: single characters first (most
frequent first), then two-character bigrams (most frequent first).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "enrich" / "data" / "cjk_freq.txt"

# Share of the CJK character total given to each punctuation mark.
PUNCT_SHARE = {
    "，": 0.05,
    "。": 0.03,
    "、": 0.01,
    "：": 0.005,
    "“": 0.005,
    "”": 0.005,
    "（": 0.004,
    "）": 0.004,
    "《": 0.002,
    "》": 0.002,
    "！": 0.002,
    "？": 0.002,
    "；": 0.001,
    "…": 0.0008,
    "—": 0.0008,
    "‘": 0.0005,
    "’": 0.0005,
    "·": 0.0005,
    "「": 0.0002,
    "」": 0.0002,
    "【": 0.0002,
    "】": 0.0002,
    "～": 0.0001,
    "–": 0.0002,
    "•": 0.0002,
    "→": 0.0001,
    "×": 0.0001,
    "°": 0.0001,
    "€": 0.00005,
}
# Common emoji (roughly in order of popularity), with a small share each.
EMOJI = "😂❤🤣👍😭🙏😘🥰😍😊🎉😁💕🥺😅🔥🤦🤷🙄😆🤗😉🤔👏🙂😳🥳😎👌💪✨👀🚀✅⭐📌💡📝🔗🔍📊📈🎯💬⚠📚🧠🤖🛠💻🌟👉📢🔔❌⚡"
EMOJI_SHARE_TOP = 0.0002
# Bytes a Windows code page may have dropped (cp1252 + cp1254 holes, soft hyphen).
# A unigram winner is still "at risk" when a vault's own counts could flip it:
# when it beats the runner-up of its dropped-byte group by less than this factor.
MARGIN = 10.0
HOLES = frozenset(b"\x81\x8d\x8e\x8f\x90\x9d\x9e\xad")


def is_cjk(char: str) -> bool:
    """Tell whether char is a CJK unified ideograph."""
    cp = ord(char)
    return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF


def count_text(text: str, weight: int, counts: Counter[str]) -> None:
    """Add weight for each CJK char and each adjacent CJK pair of text."""
    for i, char in enumerate(text):
        if is_cjk(char):
            counts[char] += weight
            if i + 1 < len(text) and is_cjk(text[i + 1]):
                counts[text[i : i + 2]] += weight


def from_jieba() -> Counter[str]:
    """Sum jieba dict.txt word counts per CJK character and bigram."""
    import jieba

    path = Path(jieba.__file__).with_name("dict.txt")
    counts: Counter[str] = Counter()
    for line in path.read_text("utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            count_text(parts[0], int(parts[1]), counts)
    return counts


def from_vault(vault: Path) -> Counter[str]:
    """Count CJK characters and bigrams in a vault's Markdown notes."""
    counts: Counter[str] = Counter()
    for note in sorted(vault.rglob("*.md")):
        count_text(note.read_text("utf-8", errors="replace"), 1, counts)
    return counts


def observed(char: str) -> bytes:
    """UTF-8 bytes of char as seen after the hole bytes were dropped."""
    return bytes(b for b in char.encode("utf-8") if b not in HOLES)


def at_risk(unigrams: Counter[str], margin: float) -> dict[str, list[str]]:
    """Map chars that lose, or win by less than margin, to their confusion group."""
    groups: defaultdict[bytes, list[str]] = defaultdict(list)
    for char in unigrams:
        groups[observed(char)].append(char)
    out: dict[str, list[str]] = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda c: -unigrams[c])
        narrow = unigrams[group[0]] < margin * unigrams[group[1]]
        out.update({c: group for c in group[0 if narrow else 1 :]})
    return out


def pick_bigrams(
    counts: Counter[str], unigrams: Counter[str], budget: int
) -> Counter[str]:
    """Keep frequent bigrams with an at-risk char, each with its competitors."""
    risk = at_risk(unigrams, MARGIN)
    ranked = sorted(
        (n, pair)
        for pair, n in counts.items()
        if len(pair) == 2
        and all(c in unigrams for c in pair)
        and (pair[0] in risk or pair[1] in risk)
    )
    picked: Counter[str] = Counter()
    for n, pair in reversed(ranked):
        a, b = pair[0], pair[1]
        rivals = {a + x for x in risk.get(b, [b])} | {x + b for x in risk.get(a, [a])}
        # a rival much rarer than the pair cannot change the decision: skip it
        picked.update(
            {
                r: counts[r]
                for r in rivals
                if counts.get(r, 0) * 5 >= n and r not in picked
            }
        )
        if len(picked) >= budget:
            break
    return picked


def add_pseudo_counts(counts: Counter[str], top: int) -> Counter[str]:
    """Keep the top CJK characters, then add punctuation and emoji."""
    singles = Counter({k: v for k, v in counts.items() if len(k) == 1})
    table = Counter(dict(singles.most_common(top)))
    total = sum(table.values())
    for char, share in PUNCT_SHARE.items():
        table[char] = max(1, round(total * share))
    for rank, char in enumerate(EMOJI):
        table[char] = max(1, round(total * EMOJI_SHARE_TOP / (1 + rank / 4)))
    return table


def format_lines(counts: Counter[str], scale: float) -> list[str]:
    """Render ``key<TAB>count`` lines, most frequent first, counts divided by scale."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [f"{key}\t{max(1, round(n / scale))}" for key, n in ordered]


def main() -> int:
    """Write the table; return a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vault", type=Path, help="count this vault instead of jieba")
    parser.add_argument("--top", type=int, default=4000)
    parser.add_argument("--bigrams", type=int, default=6200)
    parser.add_argument(
        "--scale", type=float, help="divide counts (default 10 for jieba)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    counts = from_vault(args.vault) if args.vault else from_jieba()
    table = add_pseudo_counts(counts, args.top)
    cjk_top = Counter({k: v for k, v in table.items() if is_cjk(k)})
    pairs = pick_bigrams(counts, cjk_top, args.bigrams)
    scale = args.scale or (1.0 if args.vault else 10.0)
    lines = format_lines(table, scale) + format_lines(pairs, scale)
    args.out.write_text("\n".join(lines) + "\n", "utf-8")
    print(f"wrote {len(lines)} entries, {args.out.stat().st_size} bytes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
