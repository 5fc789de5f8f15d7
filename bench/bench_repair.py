"""Benchmark for enrich.repair: mojibake repair time and vault character counting.

Run by hand:

    python3 bench/bench_repair.py                 # the working tree only
    python3 bench/bench_repair.py --before REV    # also the repair.py of git REV

Measures (median of --repeat runs each):

- ``fix_mojibake`` on the seed note (``../shared/seed/000_*.txt``) and on the
  fixture note ``fixtures/vault/20260306-rss-cn_blog-002-...md``, with the
  default table and with a merged table (default + the vault's own counts, as
  ``enrich.vault.vault_frequencies`` builds it);
- ``fix_mojibake`` on distinct notes (every fixture / vault-sample note,
  mojibaked as cp1252 and cp1254), each repaired once, caches reset first:
  what a vault scan sees, including the cold start;
- ``char_frequencies`` over 5,000 synthetic notes of ~3,000 characters.

Targets: <= 5 ms per 2 KB mojibake note, <= 100 ms for char_frequencies on 5,000 notes.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT.parent / "shared" / "seed" / "000_f915968f6288a123.txt"
SAMPLE = ROOT.parent / "shared" / "vault-sample"
FIXTURES = ROOT / "fixtures" / "vault"
FIXTURE = FIXTURES / "20260306-rss-cn_blog-002-biao-qian-yu-ci-biao.md"

sys.path.insert(0, str(ROOT))


def load_module(rev: str | None) -> types.ModuleType:
    """The working tree's enrich.repair, or the repair.py of a git revision."""
    if rev is None:
        from enrich import repair

        return repair
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:enrich/repair.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"repair_{rev}")
    module.__file__ = str(ROOT / "enrich" / "repair.py")
    sys.modules[module.__name__] = module  # dataclasses look the module up
    exec(compile(source, f"{rev}:enrich/repair.py", "exec"), module.__dict__)
    return module


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of fn in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def synthetic_notes(n: int, freq: Mapping[str, float], size: int = 3000) -> list[str]:
    """n notes of about size characters: frontmatter, Chinese and English prose, links."""
    rng = random.Random(7)
    cjk = sorted((c for c in freq if "\u4e00" <= c <= "\u9fff"), key=lambda c: -freq[c])
    cjk = cjk[:3000]
    weights = [freq[c] for c in cjk]
    words = "the model data notes vault link tag search index agent memory review".split()
    notes = []
    for i in range(n):
        parts = [
            f"---\nid: note-{i:05d}\ntitle: 笔记 {i}\ntags: [rss, notes]\n---\n\n# 标题 {i}\n\n"
        ]
        length = len(parts[0])
        while length < size:
            if rng.random() < 0.6:
                chars = rng.choices(cjk, weights, k=rng.randint(20, 60))
                para = "".join(chars) + rng.choice("，。：") + "".join(chars[:10]) + "。"
            else:
                para = " ".join(rng.choices(words, k=rng.randint(10, 30))) + "."
            para += f" [[note-{rng.randrange(n):05d}]]\n\n"
            parts.append(para)
            length += len(para)
        notes.append("".join(parts))
    return notes


def moji(text: str, codec: str) -> str:
    """UTF-8 text decoded with codec, undefined bytes dropped."""
    return text.encode("utf-8").decode(codec, errors="ignore")


def distinct_notes() -> list[str]:
    """Every readable fixture / vault-sample note, mojibaked as cp1252 and cp1254."""
    paths = sorted(FIXTURES.rglob("*.md"))
    if SAMPLE.is_dir():
        paths += sorted(SAMPLE.glob("*.md"))
    out = []
    for path in paths:
        text = path.read_text("utf-8", errors="replace")
        for codec in ("cp1252", "cp1254"):
            damaged = moji(text, codec)
            if damaged != text:
                out.append(damaged)
    return out


def run(mod: types.ModuleType, repeat: int) -> dict[str, float]:
    """All measurements for one implementation, in milliseconds."""
    default = mod.load_default_freq()
    notes = synthetic_notes(5000, default)
    vault = mod.char_frequencies(notes)
    merged = dict(default)  # as enrich.vault.vault_frequencies builds it
    for ch, n in vault.items():
        merged[ch] = merged.get(ch, 0.0) + n
    res: dict[str, float] = {}
    texts = {"seed": SEED.read_text("utf-8")} if SEED.is_file() else {}
    texts["fixture"] = FIXTURE.read_text("utf-8")
    for name, text in texts.items():
        assert mod.looks_mojibake(text), name
        for label, table in (("default", None), ("merged", merged)):
            mod.fix_mojibake(text, table)  # warm-up
            res[f"fix_mojibake {name}, {label} table"] = median_ms(
                lambda: mod.fix_mojibake(text, table), repeat
            )
    reset = getattr(mod, "_reset_caches", None)
    for label, table in (("default", None), ("merged", merged)):
        if reset is not None:
            reset()
        times = []
        for text in distinct_notes():
            start = time.perf_counter()
            mod.fix_mojibake(text, table)
            times.append(time.perf_counter() - start)
        res[f"fix_mojibake {len(times)} distinct notes, {label} table (median)"] = (
            statistics.median(times) * 1000
        )
        res[f"fix_mojibake {len(times)} distinct notes, {label} table (max)"] = (
            max(times) * 1000
        )
    res["char_frequencies, 5,000 notes of ~3,000 chars"] = median_ms(
        lambda: mod.char_frequencies(iter(notes)), max(3, repeat // 4)
    )
    return res


def main() -> int:
    """Run the benchmarks and print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", metavar="REV", help="also time repair.py of this git revision")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    after = run(load_module(None), args.repeat)
    before = run(load_module(args.before), args.repeat) if args.before else None
    if before is not None:
        print(f"| benchmark (ms) | before ({args.before}) | after |")
        print("| --- | ---: | ---: |")
        for key, value in after.items():
            print(f"| {key} | {before.get(key, float('nan')):.2f} | {value:.2f} |")
    else:
        print("| benchmark (ms) | now |\n| --- | ---: |")
        for key, value in after.items():
            print(f"| {key} | {value:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
