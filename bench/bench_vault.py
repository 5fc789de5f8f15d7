"""Benchmark for issue 2: parse + render throughput, and `enrich check` on a generated 5,000-note vault.

Run by hand: python bench/bench_vault.py [--notes 5000] [--repeat 5]
Targets: parse + render >= 5,000 notes/s on one core; `enrich check` on 5,000 notes <= 3 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from enrich.notes import parse_note

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "vault"
SHARED = ROOT.parent / "shared" / "vault-sample"


def sources() -> list[bytes]:
    """Note bodies to multiply: the fixtures, plus ../shared/vault-sample when present."""
    files = sorted(FIXTURES.rglob("*.md")) + (sorted(SHARED.glob("*.md")) if SHARED.is_dir() else [])
    return [p.read_bytes() for p in files]


def make_vault(folder: Path, n: int) -> None:
    """Write n notes made from the sources, each with a unique name and cross links."""
    src = sources()
    for i in range(n):
        body = src[i % len(src)] + f"\n\nSee also [[note-{(i * 7) % n:05d}]] and [[missing-{i}]].\n".encode()
        sub = folder / f"d{i % 20:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"note-{i:05d}.md").write_bytes(body)


def bench_parse(n: int, repeat: int) -> float:
    """Median notes/s for parse + render of n notes (one core)."""
    src = sources()
    notes = [src[i % len(src)] for i in range(n)]
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        for raw in notes:
            assert parse_note(raw).render() == raw
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_check(n: int, repeat: int) -> float:
    """Median wall seconds of `enrich check --json` on a generated n-note vault (whole process)."""
    with tempfile.TemporaryDirectory() as tmp:
        make_vault(Path(tmp), n)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "enrich", "check", tmp, "--json"], capture_output=True, check=False)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Run both benchmarks and print a Markdown table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--notes", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rate = bench_parse(args.notes, args.repeat)
    secs = bench_check(args.notes, args.repeat)
    print("| benchmark | median | target |\n| --- | --- | --- |")
    print(f"| parse + render, {args.notes} notes | {rate:,.0f} notes/s | >= 5,000 notes/s |")
    print(f"| `enrich check` on {args.notes} notes (whole process) | {secs:.2f} s | <= 3 s |")


if __name__ == "__main__":
    main()
