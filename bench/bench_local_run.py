"""Issue 4 benchmark: `enrich run` with the bundled local model on a copy of fixtures/vault.

Run by hand: python bench/bench_local_run.py [--vault fixtures/vault]
Reports the share of enrichable notes that got valid output (target >= 90%) and notes/minute.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Copy the vault, run the real CLI with --provider local, print a Markdown table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--vault", type=Path, default=ROOT / "fixtures" / "vault")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY" and not k.startswith("ENRICH_")}
    with tempfile.TemporaryDirectory() as tmp:
        vault = Path(tmp) / "vault"
        shutil.copytree(args.vault, vault)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "enrich", "run", str(vault), "--provider", "local", "--json"],
            capture_output=True, text=True, env=env, check=False,
        )
        wall = time.perf_counter() - start
    report = json.loads(proc.stdout)
    attempted = report["enriched"] + report["failed"]
    rate = report["enriched"] / attempted if attempted else 0.0
    load = os.getloadavg()[0]
    print("| enrichable notes | valid (within re-asks) | llm calls | wall s | notes/min | load avg |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {attempted} | {report['enriched']} ({rate:.0%}) | {report['llm_calls']} | {wall:.0f} | "
          f"{60 * report['enriched'] / wall:.1f} | {load:.1f} |")
    for f in report["failures"]:
        print(f"failed: {f['path']}: {f['reason']}")


if __name__ == "__main__":
    main()
