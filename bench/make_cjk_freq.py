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

Output: one ``char<TAB>count`` per line, most frequent first, UTF-8.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "enrich" / "data" / "cjk_freq.txt"

# Share of the CJK character total given to each punctuation mark.
PUNCT_SHARE = {
    "，": 0.05, "。": 0.03, "、": 0.01, "：": 0.005, "“": 0.005, "”": 0.005,
    "（": 0.004, "）": 0.004, "《": 0.002, "》": 0.002, "！": 0.002, "？": 0.002,
    "；": 0.001, "…": 0.0008, "—": 0.0008, "‘": 0.0005, "’": 0.0005, "·": 0.0005,
    "「": 0.0002, "」": 0.0002, "【": 0.0002, "】": 0.0002, "～": 0.0001,
    "–": 0.0002, "•": 0.0002, "→": 0.0001, "×": 0.0001, "°": 0.0001, "€": 0.00005,
}
# Common emoji (roughly in order of popularity), with a small share each.
EMOJI = "😂❤🤣👍😭🙏😘🥰😍😊🎉😁💕🥺😅🔥🤦🤷🙄😆🤗😉🤔👏🙂😳🥳😎👌💪✨👀🚀✅⭐📌💡📝🔗"
EMOJI_SHARE_TOP = 0.0002


def is_cjk(char: str) -> bool:
    """Tell whether char is a CJK unified ideograph."""
    cp = ord(char)
    return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF


def from_jieba() -> Counter[str]:
    """Sum jieba dict.txt word counts per CJK character."""
    import jieba  # type: ignore[import-untyped]

    path = Path(jieba.__file__).with_name("dict.txt")
    counts: Counter[str] = Counter()
    for line in path.read_text("utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            for char in parts[0]:
                if is_cjk(char):
                    counts[char] += int(parts[1])
    return counts


def from_vault(vault: Path) -> Counter[str]:
    """Count CJK characters in a vault's Markdown notes."""
    counts: Counter[str] = Counter()
    for note in sorted(vault.rglob("*.md")):
        text = note.read_text("utf-8", errors="replace")
        counts.update(c for c in text if is_cjk(c))
    return counts


def add_pseudo_counts(counts: Counter[str], top: int) -> Counter[str]:
    """Keep the top CJK characters, then add punctuation and emoji."""
    table = Counter(dict(counts.most_common(top)))
    total = sum(table.values())
    for char, share in PUNCT_SHARE.items():
        table[char] = max(1, round(total * share))
    for rank, char in enumerate(EMOJI):
        table[char] = max(1, round(total * EMOJI_SHARE_TOP / (1 + rank / 4)))
    return table


def main() -> int:
    """Write the table; return a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vault", type=Path, help="count this vault instead of jieba")
    parser.add_argument("--top", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    counts = from_vault(args.vault) if args.vault else from_jieba()
    table = add_pseudo_counts(counts, args.top)
    lines = [f"{c}\t{n}" for c, n in sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))]
    args.out.write_text("\n".join(lines) + "\n", "utf-8")
    print(f"wrote {len(lines)} entries, {args.out.stat().st_size} bytes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
