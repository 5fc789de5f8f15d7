"""Related-note candidates: tokenisation, ranking, exclusions, determinism, real sample vault."""

from __future__ import annotations

from pathlib import Path

import bm25s
import numpy as np
import pytest

from enrich.related import Candidate, CandidateIndex, LINE_CHARS, candidate_line, tokenize
from enrich.vault import Vault, scan_vault

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = ROOT / "fixtures" / "golden"


def write(folder: Path, name: str, text: str) -> None:
    """Write one note."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def note(title: str, body: str, tags: str = "", links: str = "", points: str = "") -> str:
    """A note in the user's format."""
    kp = f"\n## 关键观点\n\n{points}\n" if points else ""
    return f"---\ntitle: {title}\ntags: [{tags}]\n---\n\n# {title}\n\n## 核心内容\n\n{body}\n{kp}\n## 相关链接\n\n{links}\n"


@pytest.fixture
def small(tmp_path: Path) -> Vault:
    """A small mixed-language vault with clear topics."""
    write(tmp_path, "rag.md", note("Retrieval augmented generation", "RAG retrieval grounds LLM answers in documents.",
                                   "llm, retrieval", "- [[bm25]]"))
    write(tmp_path, "bm25.md", note("BM25 ranking", "BM25 is a lexical retrieval ranking function for documents.",
                                    "retrieval"))
    write(tmp_path, "hybrid.md", note("混合检索", "混合检索结合 BM25 和向量检索，提升 retrieval 召回。", "retrieval"))
    write(tmp_path, "sleep.md", note("Sleep trackers", "Sleep trackers measure deep sleep and heart rate.", "health"))
    write(tmp_path, "coffee.md", note("咖啡因与睡眠", "咖啡因影响睡眠，下午不要喝咖啡。", "health",
                                      points="- 咖啡因半衰期约五小时\n- 中午后不喝咖啡"))
    write(tmp_path, "sub/bread.md", note("Sourdough", "Feed the sourdough starter flour and water.", "cooking"))
    return scan_vault(tmp_path)


def test_tokenize_english_words_and_chinese_bigrams() -> None:
    assert tokenize("The Agents use LLMs, and the libraries!") == ["agent", "llm", "library"]
    assert tokenize("卡片盒笔记") == ["卡片", "片盒", "盒笔", "笔记"]
    assert tokenize("x 好 y") == ["好"]
    assert tokenize("one two three four five", limit=2) == ["three", "four"]  # stopwords dropped first
    assert tokenize("甲乙丙丁 alpha", limit=2) == ["alpha", "甲乙", "乙丙"]


def test_candidates_rank_topic_first_and_exclude_self_and_linked(small: Vault) -> None:
    index = CandidateIndex(small)
    rag = small.get("rag")
    assert rag is not None
    cands = index.candidates(rag, 15)
    ids = [c.id for c in cands]
    assert "rag" not in ids and "bm25" not in ids  # itself, and a note it already links to
    assert ids[0] == "hybrid"
    assert all(isinstance(c, Candidate) and c.score > 0 for c in cands)
    assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)


def test_cross_language_topic_via_shared_tags(small: Vault) -> None:
    index = CandidateIndex(small)
    sleep = small.get("sleep")
    assert sleep is not None
    assert index.candidates(sleep, 3)[0].id == "coffee"


def test_backlinks_count_as_evidence(small: Vault) -> None:
    index = CandidateIndex(small)
    bm25 = small.get("bm25")
    assert bm25 is not None
    assert "rag" in [c.id for c in index.candidates(bm25, 3)]


def test_k_limits_and_zero_k(small: Vault) -> None:
    index = CandidateIndex(small)
    vn = small.get("hybrid")
    assert vn is not None
    assert len(index.candidates(vn, 1)) == 1
    assert index.candidates(vn, 0) == []


def test_deterministic_order_with_ties(tmp_path: Path) -> None:
    for name in ("b", "a", "c"):
        write(tmp_path, f"{name}.md", note(f"Same {name}", "identical words about gardening tomatoes", "garden"))
    write(tmp_path, "q.md", note("Query", "gardening tomatoes", "garden"))
    vault = scan_vault(tmp_path)
    first = CandidateIndex(vault).candidates(vault.get("q"), 15)  # type: ignore[arg-type]
    again = CandidateIndex(scan_vault(tmp_path)).candidates(vault.get("q"), 15)  # type: ignore[arg-type]
    assert [c.id for c in first] == ["a", "b", "c"]
    assert [(c.id, c.score) for c in first] == [(c.id, c.score) for c in again]


def test_line_is_first_key_point_or_first_sentence(small: Vault) -> None:
    coffee, sleep = small.get("coffee"), small.get("sleep")
    assert coffee is not None and sleep is not None
    assert candidate_line(coffee) == "咖啡因半衰期约五小时"
    assert candidate_line(sleep) == "Sleep trackers measure deep sleep and heart rate."
    long = "word " * 80
    write(small.root, "long.md", note("Long", long))
    vn = scan_vault(small.root).get("long")
    assert vn is not None
    line = candidate_line(vn)
    assert len(line) <= LINE_CHARS and "\n" not in line


def test_candidate_ids_resolve_even_with_duplicate_stems(tmp_path: Path) -> None:
    write(tmp_path, "x/dup.md", note("Dup one", "tomato garden soil"))
    write(tmp_path, "y/dup.md", note("Dup two", "tomato garden soil water"))
    write(tmp_path, "q.md", note("Query", "tomato garden soil water"))
    vault = scan_vault(tmp_path)
    cands = CandidateIndex(vault).candidates(vault.get("q"), 15)  # type: ignore[arg-type]
    assert sorted(c.id for c in cands) == ["dup", "y/dup"]
    for c in cands:
        hit = vault.resolve(c.id)
        assert hit is not None and hit.title == c.title


def test_note_outside_the_index_and_empty_vault(small: Vault, tmp_path: Path) -> None:
    index = CandidateIndex(small)
    other_root = tmp_path / "other"
    write(other_root, "new.md", note("Sourdough bread", "sourdough starter flour water"))
    outside = scan_vault(other_root).notes[0]
    assert index.candidates(outside, 3)[0].id == "bread"
    empty = CandidateIndex(scan_vault(tmp_path / "nothing-here"))
    assert empty.candidates(outside, 5) == []


def test_vectorised_bm25_matches_bm25s(small: Vault) -> None:
    """enrich computes BM25 (Lucene) itself; bm25s, a test dependency, is the reference."""
    index = CandidateIndex(small)
    ref = bm25s.BM25()
    ref.index((index._tokens, index._vocab), show_progress=False)
    for key in ("indptr", "indices"):
        assert np.array_equal(ref.scores[key], index.text.bm25[key])
    assert np.allclose(ref.scores["data"], index.text.bm25["data"], atol=1e-5)
    assert ref.scores["num_docs"] == index.text.bm25["num_docs"]


def test_golden_candidates_are_valid(tmp_path: Path) -> None:
    vault = scan_vault(GOLDEN)
    index = CandidateIndex(vault)
    for vn in vault.notes:
        linked = {vault.resolve(ln.target).rel for ln in vn.links if vault.resolve(ln.target)}  # type: ignore[union-attr]
        for c in index.candidates(vn, 15):
            hit = vault.resolve(c.id)
            assert hit is not None and hit is not vn and hit.rel not in linked


@pytest.mark.skipif(not (SHARED / "vault-sample").is_dir(), reason="shared sample vault not present")
def test_sample_vault_candidates() -> None:
    vault = scan_vault(SHARED / "vault-sample")
    index = CandidateIndex(vault)
    for vn in vault.notes:
        cands = index.candidates(vn, 15)
        assert len(cands) <= 15
        assert all(vault.resolve(c.id) is not None and c.id != vn.id for c in cands)
        assert all("\n" not in c.line and len(c.line) <= LINE_CHARS for c in cands)
    atomic = vault.get("003-原子化原则")
    assert atomic is not None
    assert index.candidates(atomic, 3)[0].id == "004-链接原则"


def test_candidates_are_the_same_in_every_process(tmp_path: Path) -> None:
    """Scores do not depend on string hashing (set order once changed float sums in the 6th decimal)."""
    import json
    import os
    import subprocess
    import sys

    from fakeserver_limits import write_vault

    write_vault(tmp_path / "v", 300)
    script = (
        "import json, sys; from enrich.vault import scan_vault; from enrich.related import CandidateIndex\n"
        "v = scan_vault(sys.argv[1]); idx = CandidateIndex(v)\n"
        "print(json.dumps({vn.rel: [(c.id, c.score) for c in idx.candidates(vn)] for vn in v.notes}))"
    )
    outs = [
        json.loads(subprocess.run([sys.executable, "-c", script, str(tmp_path / "v")], capture_output=True, text=True,
                                  check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout)
        for seed in ("1", "2", "3")
    ]
    assert outs[0] == outs[1] == outs[2] and len(outs[0]) == 300
