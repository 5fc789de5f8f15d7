"""Benchmark for enrich.repair: mojibake repair time and vault character counting.

Run by hand:

    python3 bench/bench_repair.py                 # the working tree only
    python3 bench/bench_repair.py --before REV    # also the repair.py of git REV (revisions before the
                                                  # split into mojibake/charfreq/visible: one self-contained file)
                                                  # (44a099c: before the speed-up)

Measures (milliseconds, median of --repeat runs unless said otherwise):

- ``fix_mojibake`` on the seed note (``../shared/seed/000_*.txt``) and on the
  fixture note ``fixtures/vault/20260306-rss-cn_blog-002-...md`` (both ~2 KB),
  with the default table and with a merged table (default + the vault's own
  counts, built as ``enrich.vault.vault_frequencies`` does):
  "repeated" calls the same note again (every memo warm), "new note" forgets
  the memoised runs before each call (what another note of a scan costs), "first
  call" forgets every cache (the first mojibake note of a scan);
- ``fix_mojibake`` on distinct notes (every fixture / vault-sample note,
  mojibaked as cp1252 unless it already is), each repaired once in a row,
  caches reset first: median and worst (the worst is a ~70 KB gzip body);
- ``char_frequencies`` over 5,000 synthetic notes of ~3,000 characters.

Targets: <= 5 ms per ~2 KB mojibake note; <= 100 ms for char_frequencies on
5,000 notes.  Prints a Markdown table.  Numbers move a lot on a busy machine.
"""

from __future__ import annotations

import argparse
import inspect
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
WORDS = ["the", "model", "data", "notes", "vault", "link", "tag", "search", "agent"]

sys.path.insert(0, str(ROOT))


def load_module(rev: str | None) -> Any:
    """The working tree's enrich.repair, or the repair.py of a git revision."""
    if rev is None:
        from enrich import charfreq, mojibake, repair

        return types.SimpleNamespace(  # the working tree splits what the old single file held
            looks_mojibake=mojibake.looks_mojibake, load_default_freq=charfreq.load_default_freq,
            char_frequencies=charfreq.char_frequencies, fix_mojibake=repair.fix_mojibake,
        )
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:enrich/repair.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"repair_{rev}")
    module.__file__ = str(ROOT / "enrich" / "repair.py")
    sys.modules[module.__name__] = module  # dataclasses look the module up
    exec(compile(source, f"{rev}:enrich/repair.py", "exec"), module.__dict__)  # noqa: S102
    return module


def median_ms(
    fn: Callable[[], Any], repeat: int, before: Callable[[], Any] | None = None
) -> float:
    """Median wall time of fn in milliseconds (before runs untimed each time)."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
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
    notes = []
    for i in range(n):
        head = f"---\nid: note-{i:05d}\ntitle: 笔记 {i}\ntags: [rss, notes]\n---\n\n# 标题 {i}\n\n"
        parts = [head]
        length = len(head)
        while length < size:
            if rng.random() < 0.6:
                chars = rng.choices(cjk, weights, k=rng.randint(20, 60))
                para = "".join(chars) + rng.choice("，。：") + "".join(chars[:10]) + "。"
            else:
                para = " ".join(rng.choices(WORDS, k=rng.randint(10, 30))) + "."
            para += f" [[note-{rng.randrange(n):05d}]]\n\n"
            parts.append(para)
            length += len(para)
        notes.append("".join(parts))
    return notes


def distinct_notes(mod: types.ModuleType) -> list[str]:
    """Every fixture / vault-sample note as mojibake (cp1252 unless it already is)."""
    paths = sorted(FIXTURES.rglob("*.md"))
    if SAMPLE.is_dir():
        paths += sorted(SAMPLE.glob("*.md"))
    out = []
    for path in paths:
        text = path.read_text("utf-8", errors="replace")
        if not mod.looks_mojibake(text):
            text = text.encode("utf-8").decode("cp1252", errors="ignore")
        if mod.looks_mojibake(text):
            out.append(text)
    return out


def run(mod: types.ModuleType, repeat: int) -> dict[str, float]:
    """All measurements for one implementation, in milliseconds."""
    default = mod.load_default_freq()
    notes = synthetic_notes(5000, default)
    vault = mod.char_frequencies(notes)
    merged = dict(default)  # as enrich.vault.vault_frequencies builds it
    for ch, n in vault.items():
        merged[ch] = merged.get(ch, 0.0) + n
    reset = getattr(mod, "_reset_caches", None)
    forget_all = reset if reset is not None else (lambda: None)
    forget_runs = None
    if reset is not None and "runs_only" in inspect.signature(reset).parameters:
        forget_runs = lambda: reset(runs_only=True)
    res: dict[str, float] = {}
    texts = {"seed": SEED.read_text("utf-8")} if SEED.is_file() else {}
    texts["fixture"] = FIXTURE.read_text("utf-8")
    for name, text in texts.items():
        assert mod.looks_mojibake(text), name
        for label, table in (("default", None), ("merged", merged)):

            def fix(text: str = text, table: Mapping[str, float] | None = table) -> Any:
                return mod.fix_mojibake(text, table)

            fix()  # warm-up
            where = f"fix_mojibake {name}, {label} table"
            res[f"{where}, repeated"] = median_ms(fix, repeat)
            res[f"{where}, new note"] = median_ms(fix, repeat, forget_runs)
            res[f"{where}, first call"] = median_ms(fix, max(3, repeat // 4), forget_all)
    damaged = distinct_notes(mod)
    for label, table in (("default", None), ("merged", merged)):
        forget_all()
        times = []
        for text in damaged:
            start = time.perf_counter()
            mod.fix_mojibake(text, table)
            times.append(time.perf_counter() - start)
        where = f"fix_mojibake {len(times)} distinct notes in a row, {label} table"
        res[f"{where}: median"] = statistics.median(times) * 1000
        res[f"{where}: worst"] = max(times) * 1000
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
