"""Fast related-note scoring (dense rows of common terms, query terms, tag similarity) against plain references."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enrich import ranking, related
from enrich.ranking import QUERY_TERMS
from enrich.related import CandidateIndex
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
    sc = index.text.bm25
    spans = [(int(sc["indptr"][t]), int(sc["indptr"][t + 1])) for t in query.tolist()]
    if not spans:
        return np.zeros(len(index.notes), dtype=np.float32)
    docs = np.concatenate([sc["indices"][a:b] for a, b in spans])
    weights = np.concatenate([sc["data"][a:b] for a, b in spans])
    return np.bincount(docs, weights=weights, minlength=len(index.notes)).astype(np.float32)


def plain_query_terms(index: CandidateIndex, tokens: list[int]) -> npt.NDArray[np.int64]:
    """One note's query terms as first written (np.unique, document frequencies from indptr, lexsort), ascending."""
    ids, tf = np.unique(np.asarray([t for t in tokens if t], dtype=np.int64), return_counts=True)
    if len(ids) <= QUERY_TERMS:
        return ids
    indptr = index.text.bm25["indptr"]
    weight = tf * np.log1p(len(index.notes) / np.maximum(indptr[ids + 1] - indptr[ids], 1))
    return np.sort(ids[np.lexsort((ids, -weight))[:QUERY_TERMS]]).astype(np.int64)


def plain_candidates(index: CandidateIndex, vn: VaultNote, k: int) -> list[str]:
    """Candidate ids by a full sort of the eligible notes: rounded score descending, then id."""
    total = index.scores(vn)
    excluded = index._excluded(vn)
    eligible = [i for i in range(len(total)) if i not in excluded and index._ids[i] is not None and total[i] >= 1e-9]
    eligible.sort(key=lambda i: (-round(float(total[i]), 6), str(index._ids[i])))
    return [str(index._ids[i]) for i in eligible[:k]]


def check_bm25(index: CandidateIndex) -> tuple[int, int]:
    """Assert every note's BM25 sums equal the plain ones, alone and in one block; return how many queries used
    dense rows, sparse postings."""
    dense = sparse = 0
    text, n = index.text, len(index._tokens)
    block = text.sums(*text.query_terms(index._tokens), n)
    assert np.array_equal(text.sums(*text.doc_terms(range(n)), n), block)
    for i, (tokens, got) in enumerate(zip(index._tokens, block)):
        row, query = text.query_terms([tokens])
        assert not row.any() and np.array_equal(query, plain_query_terms(index, tokens))
        assert np.array_equal(text.doc_terms([i])[1], query)
        rows = index.text.dense_row[query]
        dense, sparse = dense + bool((rows >= 0).any()), sparse + bool((rows < 0).any())
        np.testing.assert_allclose(got, plain_bm25(index, query), rtol=1e-6, atol=0)
        assert np.array_equal(text.sums(row, query, 1)[0], got)  # the same float32 sums alone as in a block
    return dense, sparse


@pytest.fixture
def zipf(tmp_path: Path) -> Vault:
    """A small Zipf-vocabulary vault."""
    return zipf_vault(tmp_path / "zipf")


@pytest.mark.parametrize("dense_df", [0, 3, 10, 40, None])
def test_dense_rows_plus_postings_equal_the_plain_bincount(zipf: Vault, dense_df: int | None) -> None:
    index = CandidateIndex(zipf, dense_df=dense_df)
    text = index.text
    cut = 64 if dense_df is None else dense_df
    assert np.array_equal(np.flatnonzero(text.dense_row >= 0), np.flatnonzero(text.df > cut))
    dense, sparse = check_bm25(index)
    if dense_df in (3, 10):  # both kinds of terms, also within one query
        assert 0 < text.dense.shape[0] < int((text.df > 0).sum()) and dense > 0 and sparse > 0
        queries = [text.query_terms([t])[1] for t in index._tokens]
        assert any(0 < (text.dense_row[q] >= 0).sum() < len(q) for q in queries)


def test_dense_rows_hold_the_csc_weights(zipf: Vault) -> None:
    text = CandidateIndex(zipf, dense_df=5).text
    sc = text.bm25
    for t in np.flatnonzero(text.dense_row >= 0).tolist():
        a, b = int(sc["indptr"][t]), int(sc["indptr"][t + 1])
        expect = np.zeros(len(zipf.notes), dtype=np.float64)
        expect[sc["indices"][a:b]] = sc["data"][a:b]
        assert np.array_equal(text.dense[text.dense_row[t]], expect)


def test_memory_cap_keeps_the_most_common_terms(zipf: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranking, "DENSE_BYTES", 8 * len(zipf.notes) * 5)
    index = CandidateIndex(zipf, dense_df=0)
    text = index.text
    kept = np.flatnonzero(text.dense_row >= 0)
    assert text.dense.shape == (5, len(zipf.notes)) and len(kept) == 5
    assert text.df[kept].min() >= np.sort(text.df)[-5] and np.array_equal(text.dense_row[kept], np.arange(5))
    check_bm25(index)


@pytest.mark.parametrize("folder", [ROOT / "fixtures" / "golden", ROOT / "fixtures" / "vault", SAMPLE])
def test_real_vaults_with_every_term_dense(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    for dense_df in (0, 1, 2):
        dense, sparse = check_bm25(CandidateIndex(scan_vault(folder), dense_df=dense_df))
        assert dense > 0 and (sparse > 0 or dense_df == 0)


@pytest.mark.parametrize("share", [0.0, ranking.DENSE_PRODUCT_SHARE, float("inf")])
def test_candidates_do_not_depend_on_dense_rows_or_the_block(
    zipf: Vault, tmp_path: Path, share: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nor on how a block adds its dense rows: one product (share 0), each query's own rows (inf), or as chosen."""
    from fakeserver_limits import write_vault

    monkeypatch.setattr(ranking, "DENSE_PRODUCT_SHARE", share)

    write_vault(tmp_path / "gen", 150)  # ~50 words, each in most notes: the default threshold makes them dense
    for vault in (zipf, scan_vault(tmp_path / "gen")):
        n = len(vault.notes)
        indexes = [CandidateIndex(vault, dense_df=d) for d in (None, 0, 4, n)]
        assert indexes[1].text.dense.shape[0] > 0 and indexes[3].text.dense.shape[0] == 0
        blocks = [index.candidates_many(vault.notes, 10) for index in indexes]
        for i, vn in enumerate(vault.notes):
            got = [[(c.id, c.score) for c in index.candidates(vn, 10)] for index in indexes]
            assert got[0] == got[1] == got[2] == got[3]
            assert all([(c.id, c.score) for c in block[i]] == got[0] for block in blocks)
            assert [c for c, _ in got[0]] == plain_candidates(indexes[3], vn, 10)
        if vault is not zipf:
            assert indexes[0].text.dense.shape[0] > 0


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
    queries = index._tokens + extra
    rows, terms = index.text.query_terms(queries)
    assert rows.dtype == terms.dtype == np.int64
    for i, tokens in enumerate(queries):
        assert np.array_equal(terms[rows == i], plain_query_terms(index, tokens))


def test_tag_similarity_matches_the_plain_formulation(zipf: Vault) -> None:
    index = CandidateIndex(zipf)
    feats = index._tags
    queries = [index._tag_keys(vn) for vn in zipf.notes] + [{"rss", "unknown"}, set(), {"unknown"}]
    block = feats.similarity(queries)
    for keys, got in zip(queries, block):
        ids = sorted({feats.vocab[f] for f in keys if f in feats.vocab})
        total = sum(feats.idf[ids].tolist())
        expect = np.zeros(feats.n, dtype=np.float32)
        if total > 0:
            rows = np.concatenate([feats.postings[i] for i in ids])
            weights = np.concatenate([np.full(len(feats.postings[i]), feats.idf[i]) for i in ids])
            expect = (np.bincount(rows, weights=weights, minlength=feats.n) / total).astype(np.float32)
        assert np.array_equal(got, expect) and np.array_equal(feats.similarity([keys])[0], expect)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_top_k_agrees_with_a_full_sort(data: st.DataObject) -> None:
    """Near ties (within the 6th decimal), -inf and scores under 1e-9 are where a partition could go wrong."""
    n = data.draw(st.integers(1, 30))
    values = [0.0, 1e-10, 0.25, 0.5, 0.5000004, 0.4999996, 0.5000006, 1.0, -np.inf]
    scores = np.asarray(data.draw(st.lists(st.lists(st.sampled_from(values), min_size=n, max_size=n), min_size=1,
                                           max_size=4)), dtype=np.float32)
    rank = np.asarray(data.draw(st.permutations(range(n))), dtype=np.int64)
    k = data.draw(st.integers(1, n + 2))
    for row, got in zip(scores, ranking.top_k(scores.copy(), k, rank)):
        keep = [i for i in range(n) if row[i] >= 1e-9]
        keep.sort(key=lambda i: (-round(float(row[i]), 6), rank[i]))
        assert [i for i, _ in got] == keep[:k]
        assert all(score == round(float(row[i]), 6) for i, score in got)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["a", "b c", " ", ".", "!", "?", "。", "！", "？", "\n", "\t", "\u3000", "…"]), max_size=14))
def test_first_sentence_search_agrees_with_the_lookbehind_split(parts: list[str]) -> None:

    from enrich.related import _SENTENCE_END

    text = "".join(parts)
    end = _SENTENCE_END.search(text)
    assert (text[: end.end()] if end else text) == re.split(r"(?<=[.!?])\s+|(?<=[。！？])", text, maxsplit=1)[0]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aZz09 _-.,'\n\t") + ["É", "é", "İ", "\u212a", "ß", "中", "文", "ｆ", "\ud800", "😀", "Σ"]),
               max_size=40))
def test_words_agree_with_the_regex_on_lowercased_text(text: str) -> None:
    from enrich.related import _WORD, _raw_words, tokenize

    words = [w if isinstance(w, str) else w.decode("ascii") for w in _raw_words(text)]
    assert words == _WORD.findall(text.lower())
    low = text.lower()  # tokenize as first written: both kinds of tokens from the lowercased text
    expect = [w for w in map(related._word, _WORD.findall(low)) if w]
    assert tokenize(text) == (expect if low.isascii() else expect + related._cjk_tokens(related._CJK_RUN.findall(low), None))
    head, _, tail = text.partition("\n")
    assert tokenize(head, tail, limit=5) == tokenize(head + "\n" + tail, limit=5)


@pytest.mark.parametrize("folder", [ROOT / "fixtures" / "golden", ROOT / "fixtures" / "vault", SAMPLE])
def test_note_tokens_are_those_of_the_joined_body(folder: Path) -> None:
    """Key points and content are tokenised apart (CJK looked for only in parts that are not ASCII)."""
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    for vn in scan_vault(folder).notes:
        title = related.tokenize(vn.title)
        names = related.tokenize(" ".join([*vn.aliases, *(t.replace("-", " ").replace("_", " ") for t in vn.tags)]))
        body = related._MARKUP.sub(" ", related._key_point_text(vn) + "\n" + related._raw_content(vn))
        assert related.note_tokens(vn) == title + title + names + related.tokenize(body, limit=related.CONTENT_TOKENS)
