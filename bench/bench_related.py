"""Benchmark related-note candidates on a synthetic 10,000-note vault (mixed Chinese/English).

Targets: index build <= 3 s, candidates for one note <= 5 ms (median).
Run: python3 bench/bench_related.py [--notes 10000] [--queries 200]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from enrich import prepare
from enrich.related import CandidateIndex
from enrich.tags import TagVocabulary
from enrich.vault import scan_vault

EN_WORDS = (
    "model retrieval agent memory graph note link tag search index embedding language benchmark evaluation "
    "training inference latency throughput token context window prompt reasoning planning tool safety alignment "
    "sleep health coffee light rhythm writing thinking habit draft outline cluster atomic permanent fleeting "
    "vault markdown obsidian zettelkasten knowledge system workflow review spaced repetition attention budget"
).split()
ZH_TEXT = (
    "卡片盒笔记法的核心在于链接而不是收集每张永久笔记只包含一个想法写作就是思考本身模型推理优化需要关注延迟和吞吐"
    "检索增强生成依赖召回质量混合检索结合关键词和向量睡眠规律比时长更重要早晨光照稳定昼夜节律标签需要统一词表"
)
TAGS = ["llm", "retrieval", "agents", "writing", "sleep", "zettelkasten", "rss", "auto-import", "research",
        "embeddings", "evaluation", "inference", "habit", "health", "AI", "ai_research", "Agent", "note-taking"]


class Corpus:
    """Word and character pools: realistic (Zipf-distributed, large vocabulary) or tiny (worst case)."""

    def __init__(self, rng: random.Random, tiny: bool) -> None:
        if tiny:
            self.words, self.chars = EN_WORDS, list(dict.fromkeys(ZH_TEXT))
            self.wweights = self.cweights = None
            return
        syll = ["ka", "ro", "ten", "mi", "sa", "lo", "ver", "in", "ga", "to", "ne", "pra", "dis", "con", "al", "ex"]
        made = {"".join(rng.choice(syll) for _ in range(rng.randint(2, 4))) for _ in range(12000)}
        self.words = EN_WORDS + sorted(made)
        self.wweights = list(itertools.accumulate(1 / (r + 1) ** 1.07 for r in range(len(self.words))))
        chars, weights = _cjk_pool()
        cum = list(itertools.accumulate(weights))
        zh_words = {"".join(rng.choices(chars, cum_weights=cum, k=rng.choice((1, 2, 2, 2, 3, 4)))) for _ in range(20000)}
        self.chars = sorted(zh_words)
        rng.shuffle(self.chars)
        self.cweights = list(itertools.accumulate(1 / (r + 1) ** 1.07 for r in range(len(self.chars))))

    def en(self, rng: random.Random, n: int) -> str:
        """An English-like sentence of n words."""
        words = rng.choices(self.words, cum_weights=self.wweights, k=n) if self.wweights else [rng.choice(self.words) for _ in range(n)]
        return " ".join(words).capitalize() + "."

    def zh(self, rng: random.Random, n: int) -> str:
        """A Chinese-like sentence of about n characters (words drawn from a Zipf distribution)."""
        if not self.cweights:
            return "".join(rng.choice(self.chars) for _ in range(n)) + "。"
        return "".join(rng.choices(self.chars, cum_weights=self.cweights, k=n))[:n] + "。"


def _cjk_pool() -> tuple[list[str], list[float]]:
    """The 3,000 most frequent Chinese characters with their frequencies (bundled table)."""
    from importlib import resources

    rows = resources.files("enrich.data").joinpath("cjk_freq.txt").read_text(encoding="utf-8").splitlines()
    pairs = [(c, float(n)) for c, n in (r.split("\t") for r in rows if "\t" in r) if "\u4e00" <= c <= "\u9fff"]
    pairs = pairs[:3000]
    return [c for c, _ in pairs], [n for _, n in pairs]


def make_note(i: int, rng: random.Random, total: int, corpus: Corpus) -> tuple[str, str]:
    """One synthetic note (file name, text) in the user's format."""
    zh = rng.random() < 0.5
    title = corpus.zh(rng, 8)[:-1] if zh else corpus.en(rng, 5)[:-1]
    stem = f"{i:05d}-" + (title if zh else title.lower().replace(" ", "-"))
    tags = ", ".join(f'"{t}"' for t in rng.sample(TAGS, 3))
    body = " ".join(corpus.zh(rng, 30) if zh else corpus.en(rng, 18) for _ in range(rng.randint(4, 12)))
    links = "\n".join(f"- [[{rng.randrange(total):05d}-missing]]" for _ in range(rng.randint(0, 3)))
    heads = ("来源信息", "核心内容", "关键观点", "相关链接") if zh else ("Source", "Content", "Key points", "Related")
    text = (
        f"---\nid: {i:05d}\ntitle: \"{title}\"\ncreated: 2026-03-01\ntags: [{tags}]\n---\n\n# {title}\n\n"
        f"## {heads[0]}\n\n- bench\n\n## {heads[1]}\n\n{body}\n\n## {heads[2]}\n\n- {corpus.en(rng, 8)}\n\n"
        f"## {heads[3]}\n\n{links}\n"
    )
    return stem + ".md", text


def write_vault(root: Path, n: int, seed: int = 7, tiny: bool = False) -> None:
    """Write n synthetic notes under root."""
    rng = random.Random(seed)
    corpus = Corpus(rng, tiny)
    for i in range(n):
        name, text = make_note(i, rng, n, corpus)
        (root / name).write_text(text, encoding="utf-8")


def main() -> None:
    """Build the vault, time scan, index build and per-note candidates."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notes", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--tiny-vocab", action="store_true", help="Worst case: ~60 words, ~80 characters in all notes.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_vault(root, args.notes, tiny=args.tiny_vocab)
        t0 = time.perf_counter()
        vault = scan_vault(root)
        t1, c1 = time.perf_counter(), time.process_time()
        index = CandidateIndex(vault)
        t2, c2 = time.perf_counter(), time.process_time()
        TagVocabulary.load(vault)
        t3 = time.perf_counter()
        rng = random.Random(1)
        times, cpu = [], []
        for vn in rng.sample(vault.notes, min(args.queries, len(vault.notes))):
            s, c = time.perf_counter(), time.process_time()
            index.candidates(vn, args.k)
            times.append((time.perf_counter() - s) * 1000)
            cpu.append((time.process_time() - c) * 1000)
        block = prepare.rank_block(len(index.notes))
        sample = rng.sample(vault.notes, min(args.queries, len(vault.notes)))
        c = time.process_time()
        for at in range(0, len(sample), block):
            index.candidates_many(sample[at : at + block], args.k)
        per_note_in_blocks = (time.process_time() - c) * 1000 / len(sample)
    print(f"notes: {len(vault.notes)}")
    print(f"scan: {t1 - t0:.2f} s (not part of the index target)")
    print(f"index build: {t2 - t1:.2f} s wall, {c2 - c1:.2f} s CPU (target <= 3 s)")
    print(f"tag vocabulary: {(t3 - t2) * 1000:.1f} ms")
    print(f"candidates(k={args.k}): median {statistics.median(times):.2f} ms, "
          f"p95 {sorted(times)[int(len(times) * 0.95) - 1]:.2f} ms, CPU median {statistics.median(cpu):.2f} ms "
          "(target median <= 5 ms)")
    print(f"candidates in blocks of {block} (as a run ranks them): {per_note_in_blocks:.2f} ms CPU per note")
    print("machine load (1/5/15 min):", " ".join(f"{x:.2f}" for x in os.getloadavg()), f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
