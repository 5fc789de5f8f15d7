"""Fast related-note scoring (dense rows of common terms, query terms, tag similarity) against plain references."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enrich import related
from enrich.related import QUERY_TERMS, CandidateIndex
from enrich.vault import Vault, VaultNote, scan_vault

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "vault-sample"
SYLLABLES = ["ka", "ro", "ten", "mi", "lo", "ver", "in", "ga", "to", "ne", "pra", "dis", "con", "al", "ex", "bu"]


def zipf_vault(folder: Path, n: int = 90, seed: int = 3) -> Vault:
    """n notes whose words follow a Zipf law (a few words in most notes, most in a few), with tags and links."""
    rng = random.Random(seed)
    words = sorted({"".join(rng.choice(SYLLABLES) for _ in range(3)) for _ in range(600)})
    rng.shuffle(words)
    weights = [1 / (r + 1) for r in range(len(words))]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        title = " ".join(w.capitalize() for w in rng.choices(words, weights, k=3))
        body = " ".join(rng.choices(words, weights, k=rng.randint(20, 160)))
        tags = ", ".join(f'"{t}"' for t in rng.sample(["rss", "llm", "sleep", "notes", "tools", words[i % 40]], 2))
        links = "\n".join(f"- [[gen-{rng.randrange(n):05d}]]" for _ in range(rng.randint(0, 2)))
        (folder / f"gen-{i:05d}.md").write_text(
            f"---\nid: gen-{i:05d}\ntitle: {title}\ntags: [{tags}]\n---\n\n# {title}\n\n## 核心内容\n\n{body}.\n\n"
            f"## 关键观点\n\n- {rng.choice(words)} {rng.choice(words)}\n\n## 相关链接\n\n{links}\n",
            encoding="utf-8",
        )
    return scan_vault(folder)


def plain_bm25(index: CandidateIndex, query: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """The BM25 sums as first written: every query term's postings concatenated, one bincount."""
    sc = index._bm25
    spans = [(int(sc["indptr"][t]), int(sc["indptr"][t + 1])) for t in query.tolist()]
    docs = np.concatenate([sc["indices"][a:b] for a, b in spans])
    weights = np.concatenate([sc["data"][a:b] for a, b in spans])
    return np.bincount(docs, weights=weights, minlength=len(index.notes)).astype(np.float32)


def plain_query_terms(index: CandidateIndex, tokens: list[int]) -> npt.NDArray[np.int64]:
    """Query terms as first written: np.unique, document frequencies from indptr, lexsort."""
    ids, tf = np.unique(np.asarray([t for t in tokens if t], dtype=np.int64), return_counts=True)
    if len(ids) <= QUERY_TERMS:
        return ids
    indptr = index._bm25["indptr"]
    weight = tf * np.log1p(len(index.notes) / np.maximum(indptr[ids + 1] - indptr[ids], 1))
    return np.asarray(ids[np.lexsort((ids, -weight))[:QUERY_TERMS]], dtype=np.int64)


def plain_candidates(index: CandidateIndex, vn: VaultNote, k: int) -> list[str]:
    """Candidate ids as first written: argpartition of the scores, ties of the last one, score then id."""
    total = index.scores(vn)
    excluded = index._excluded(vn)
    want = min(len(total), k + len(excluded))
    top = np.argpartition(-total, want - 1)[:want] if want < len(total) else np.arange(len(total))
    top = np.flatnonzero(total >= max(float(total[top].min()), 1e-9))
    rounded = np.round(total[top].astype(np.float64), 6)
    ids = [index._ids[i] for i in top[np.lexsort((index._id_rank[top], -rounded))].tolist() if i not in excluded]
    return [str(c) for c in ids if c is not None and c != vn.id][:k]


def check_bm25(index: CandidateIndex) -> tuple[int, int]:
    """Assert every note's BM25 sums equal the plain ones; return how many queries used dense rows, sparse postings."""
    dense = sparse = 0
    for tokens in index._tokens:
        query = index._query_terms(tokens)
        if not len(query):
            continue
        rows = index._dense_row[query]
        dense, sparse = dense + bool((rows >= 0).any()), sparse + bool((rows < 0).any())
        np.testing.assert_allclose(index._bm25_scores(query), plain_bm25(index, query), rtol=1e-6, atol=0)
    return dense, sparse


@pytest.fixture
def zipf(tmp_path: Path) -> Vault:
    """A small Zipf-vocabulary vault."""
    return zipf_vault(tmp_path / "zipf")


@pytest.mark.parametrize("dense_df", [0, 3, 10, 40, None])
def test_dense_rows_plus_postings_equal_the_plain_bincount(zipf: Vault, dense_df: int | None) -> None:
    index = CandidateIndex(zipf, dense_df=dense_df)
    df = np.diff(index._bm25["indptr"])
    cut = 64 if dense_df is None else dense_df
    assert np.array_equal(np.flatnonzero(index._dense_row >= 0), np.flatnonzero(df > cut))
    dense, sparse = check_bm25(index)
    if dense_df in (3, 10):  # both kinds of terms, also within one query
        assert 0 < index._dense.shape[0] < int((df > 0).sum()) and dense > 0 and sparse > 0
        assert any(0 < (index._dense_row[q] >= 0).sum() < len(q) for q in map(index._query_terms, index._tokens))


def test_dense_rows_hold_the_csc_weights(zipf: Vault) -> None:
    index = CandidateIndex(zipf, dense_df=5)
    sc = index._bm25
    for t in np.flatnonzero(index._dense_row >= 0).tolist():
        a, b = int(sc["indptr"][t]), int(sc["indptr"][t + 1])
        expect = np.zeros(len(index.notes), dtype=np.float32)
        expect[sc["indices"][a:b]] = sc["data"][a:b]
        assert np.array_equal(index._dense[index._dense_row[t]], expect)


def test_memory_cap_keeps_the_most_common_terms(zipf: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(related, "DENSE_BYTES", 4 * len(zipf.notes) * 5)
    index = CandidateIndex(zipf, dense_df=0)
    df = np.diff(index._bm25["indptr"])
    kept = np.flatnonzero(index._dense_row >= 0)
    assert index._dense.shape == (5, len(zipf.notes)) and len(kept) == 5
    assert df[kept].min() >= np.sort(df)[-5] and np.array_equal(index._dense_row[kept], np.arange(5))
    check_bm25(index)


@pytest.mark.parametrize("folder", [ROOT / "fixtures" / "golden", ROOT / "fixtures" / "vault", SAMPLE])
def test_real_vaults_with_every_term_dense(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    for dense_df in (0, 1, 2):
        dense, sparse = check_bm25(CandidateIndex(scan_vault(folder), dense_df=dense_df))
        assert dense > 0 and (sparse > 0 or dense_df == 0)


def test_candidates_do_not_depend_on_dense_rows(zipf: Vault, tmp_path: Path) -> None:
    from fakeserver_limits import write_vault

    write_vault(tmp_path / "gen", 150)  # ~50 words, each in most notes: the default threshold makes them dense
    for vault in (zipf, scan_vault(tmp_path / "gen")):
        n = len(vault.notes)
        indexes = [CandidateIndex(vault, dense_df=d) for d in (None, 0, 4, n)]
        assert indexes[1]._dense.shape[0] > 0 and indexes[3]._dense.shape[0] == 0
        for vn in vault.notes:
            got = [[(c.id, c.score) for c in index.candidates(vn, 10)] for index in indexes]
            assert got[0] == got[1] == got[2] == got[3]
            assert [c for c, _ in got[0]] == plain_candidates(indexes[3], vn, 10)
        if vault is not zipf:
            assert indexes[0]._dense.shape[0] > 0


def test_every_candidate_when_k_covers_the_vault(zipf: Vault) -> None:
    index = CandidateIndex(zipf, dense_df=4)
    for vn in zipf.notes[:10]:
        assert [c.id for c in index.candidates(vn, 500)] == plain_candidates(index, vn, 500)


def test_query_terms_match_the_plain_formulation(zipf: Vault) -> None:
    index = CandidateIndex(zipf)
    n_vocab = len(index._vocab)
    rng = random.Random(5)
    extra = [list(range(1, n_vocab)), [0, 0, 3, 3, 1], [], [0], [7] * 5 + list(range(1, 200))]
    extra += [rng.choices(range(n_vocab), k=rng.randint(1, 400)) for _ in range(50)]
    for tokens in index._tokens + extra:
        got = index._query_terms(tokens)
        assert got.dtype == np.int64 and np.array_equal(got, plain_query_terms(index, tokens))


def test_tag_similarity_matches_the_plain_formulation(zipf: Vault) -> None:
    index = CandidateIndex(zipf)
    feats = index._tags
    for keys in [index._tag_keys(vn) for vn in zipf.notes] + [{"rss", "unknown"}, set(), {"unknown"}]:
        ids = sorted({feats.vocab[f] for f in keys if f in feats.vocab})
        total = float(feats.idf[ids].sum()) if ids else 0.0
        expect = np.zeros(feats.n, dtype=np.float32)
        if total > 0:
            rows = np.concatenate([feats.postings[i] for i in ids])
            weights = np.concatenate([np.full(len(feats.postings[i]), feats.idf[i]) for i in ids])
            expect = (np.bincount(rows, weights=weights, minlength=feats.n) / total).astype(np.float32)
        assert np.array_equal(feats.similarity(keys), expect)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["a", "b c", " ", ".", "!", "?", "。", "！", "？", "\n", "\t", "\u3000", "…"]), max_size=14))
def test_first_sentence_search_agrees_with_the_lookbehind_split(parts: list[str]) -> None:
    import re

    from enrich.related import _SENTENCE_END

    text = "".join(parts)
    end = _SENTENCE_END.search(text)
    assert (text[: end.end()] if end else text) == re.split(r"(?<=[.!?])\s+|(?<=[。！？])", text, maxsplit=1)[0]
