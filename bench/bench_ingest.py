"""Benchmark `enrich ingest`: 10 local feeds x 100 entries into an empty vault (target <= 5 s).

Usage: python3 bench/bench_ingest.py [--feeds 10] [--entries 100]
Prints the seconds for the first ingest (1,000 notes written) and for a second one (all duplicates).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

from enrich.feeds import IngestOptions, ingest

PARAGRAPH = (
    "<p>Notes compound when they are <b>small</b>, written in your own words and "
    "<a href='/related/{n}'>linked</a> to older ones. Links, not folders, show what you keep returning to. "
    "<em>Review</em> old notes while writing new ones &amp; the archive stays alive.</p>"
)


def make_feed(i: int, entries: int) -> str:
    """One RSS 2.0 feed with full HTML content per entry (about 2 KB each)."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    items = []
    for j in range(entries):
        body = "<h2>Section</h2>" + "".join(PARAGRAPH.format(n=j) for _ in range(4))
        body += "<ul><li>one idea per note</li><li>two or three links</li></ul><pre><code>x = 1</code></pre>"
        items.append(
            f"<item><title>Feed {i} post {j}: why small notes compound</title>"
            f"<link>https://blog{i}.example.com/posts/{j}/?utm_source=rss</link>"
            f"<guid>blog{i}-{j}</guid><pubDate>{format_datetime(start + timedelta(hours=j))}</pubDate>"
            f"<description>Summary of post {j}.</description>"
            f"<content:encoded><![CDATA[{body}]]></content:encoded></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>'
        f"<title>Bench Blog {i}</title><link>https://blog{i}.example.com/</link>" + "".join(items) + "</channel></rss>"
    )


def main() -> None:
    """Build the feeds, ingest twice, print the timings."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feeds", type=int, default=10)
    ap.add_argument("--entries", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sources = []
        for i in range(args.feeds):
            path = folder / f"feed{i}.xml"
            path.write_text(make_feed(i, args.entries), encoding="utf-8")
            sources.append(str(path))
        vault = folder / "vault"
        (vault / ".obsidian").mkdir(parents=True)
        opts = IngestOptions(today=date(2026, 3, 8))
        c0, t0 = time.process_time(), time.perf_counter()
        first = ingest(sources, vault, opts)
        c1, t1 = time.process_time(), time.perf_counter()
        second = ingest(sources, vault, opts)
        c2, t2 = time.process_time(), time.perf_counter()
        assert not first.failed and len(first.created) == args.feeds * args.entries, first.failed[:3]
        assert not second.created
        total = args.feeds * args.entries
        print(f"first ingest:  {t1 - t0:.2f} s wall, {c1 - c0:.2f} s CPU for {total} entries "
              f"({len(first.created)} notes written)")
        print(f"second ingest: {t2 - t1:.2f} s wall, {c2 - c1:.2f} s CPU ({len(second.skipped)} duplicates skipped)")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        print(f"machine: {os.cpu_count()} cores, load average {load:.1f} (other processes slow the wall time)")
        print(f"target <= 5 s: {'ok' if t1 - t0 <= 5 else 'MISSED'}")


if __name__ == "__main__":
    main()
