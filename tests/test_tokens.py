"""Token counting: the encoding's parsed tables are cached per user, and a damaged cache is rebuilt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from enrich import tokenbound, tokens

TEXT = "héllo wörld 你好 <|endoftext|> [[link]]"


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tokens.bound_for.cache_clear()
    yield tmp_path / "cache"
    tokens.bound_for.cache_clear()


def test_the_parsed_encoding_is_cached_and_counts_alike(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = tiktoken.get_encoding(tokens.FALLBACK).encode(TEXT, disallowed_special=())
    first = tokens.get_encoding(tokens.FALLBACK)
    path = tokens.cache_file(tokens.FALLBACK)
    assert path.parent == cache_home / "enrich" and path.is_file()

    def no_parsing(name: str) -> tiktoken.Encoding:
        raise AssertionError("the cache file should have been used")

    monkeypatch.setattr(tiktoken, "get_encoding", no_parsing)
    cached = tokens.get_encoding(tokens.FALLBACK)
    assert cached.encode(TEXT, disallowed_special=()) == first.encode(TEXT, disallowed_special=()) == reference
    assert cached.name == tokens.FALLBACK and cached.n_vocab == first.n_vocab


@pytest.mark.parametrize("damage", [lambda b: b[:1000], lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], lambda b: b""])
def test_a_damaged_cache_file_is_rebuilt(cache_home: Path, damage: object) -> None:
    tokens.get_encoding(tokens.FALLBACK)
    path = tokens.cache_file(tokens.FALLBACK)
    good = path.read_bytes()
    path.write_bytes(damage(good))  # type: ignore[operator]
    enc = tokens.get_encoding(tokens.FALLBACK)
    assert enc.encode(TEXT, disallowed_special=()) == tiktoken.get_encoding(tokens.FALLBACK).encode(TEXT, disallowed_special=())
    assert path.read_bytes() == good


def test_an_unwritable_cache_folder_only_means_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    enc = tokens.get_encoding(tokens.FALLBACK)
    assert enc.encode("hello", disallowed_special=()) and blocker.read_text() == "x"
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]


ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "vault-sample"
_PIECES = st.sampled_from([
    "the", " The", " vocabulary", " antidisestablishment", "ing", " 2026", "12345", ".", "...", ",", "!", "?!",
    " ", "  ", "\n", "\n\n", "\r\n", "\t", "你好", "写作即思考", "。", "—", "é", "naïve", "🙂", "<|endoftext|>",
    "[[link]]", "http://x.y/z?a=1", "I'm", " don't", "'s", "’", "ÀÉ", "\u3000", "#", "##", " - ", "**bold**",
])


def _bound_and_encoding(cache_home: Path) -> tuple[Any, tiktoken.Encoding]:
    """The bound saved when the bundled tables are loaded, and those tables."""
    enc = tokens.get_encoding(tokens.FALLBACK)
    bound = tokenbound.load(tokens.bound_file(tokens.FALLBACK))
    assert bound is not None
    return bound, enc


def _corpus() -> list[str]:
    """The fixture notes, and the real vault sample when it is there."""
    files = sorted((ROOT / "fixtures").rglob("*.md")) + (sorted(SHARED.glob("*.md")) if SHARED.is_dir() else [])
    return [p.read_bytes().decode("utf-8", "replace") for p in files]


def test_the_bound_is_never_below_the_count_on_real_notes(cache_home: Path) -> None:
    bound, enc = _bound_and_encoding(cache_home)
    texts = _corpus()
    assert len(texts) >= 10
    for text in texts:
        pieces = bound.pieces(text)
        assert "".join(pieces) == text
        exact = len(enc.encode(text, disallowed_special=()))
        assert sum(len(enc.encode(p, disallowed_special=())) for p in pieces) == exact  # tiktoken's own pieces
        assert exact <= bound.tokens(text) <= len(text.encode("utf-8", "surrogatepass"))


_ENC = tiktoken.get_encoding(tokens.FALLBACK)
_BOUND = tokenbound.Bound(_ENC._pat_str, frozenset(tokenbound.one_token_words(_ENC._mergeable_ranks)))


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=40))
def test_the_bound_is_never_below_the_count(parts: list[str]) -> None:
    bound, enc = _BOUND, _ENC
    text = "".join(parts)
    assert len(enc.encode(text, disallowed_special=())) <= bound.tokens(text)


def test_an_article_known_to_fit_is_not_counted_and_one_over_is(cache_home: Path) -> None:
    from enrich.config import Settings
    from enrich.prepare import RequestBuilder
    from enrich.vault import scan_vault

    tokens.get_encoding(tokens.FALLBACK)  # an earlier run loaded the tables: the bound is saved
    tokens.bound_for.cache_clear()
    builder = RequestBuilder(scan_vault(ROOT / "fixtures" / "vault"), Settings(), tokens.LazyCounter("gpt-4"), "gpt-4")
    builder.count_tokens = False
    prose = " ".join(["The notes compound when they are linked and reviewed again."] * 80)  # ~4,800 bytes
    assert len(prose.encode()) > 3000
    assert builder.counter_fit(prose) == (prose, False, None)
    assert not builder.counter.loaded  # tiktoken's tables were never needed
    long = prose * 8  # beyond what the bound can vouch for: counted and cut
    text, truncated, n = builder.counter_fit(long)
    assert builder.counter.loaded and truncated and n is not None and n <= 3000


def test_without_a_saved_bound_or_with_a_damaged_one_the_article_is_counted(cache_home: Path) -> None:
    counter = tokens.LazyCounter("gpt-4")
    assert not counter.surely_within("word " * 1000, 3000)  # nothing saved yet: no claim
    tokens.get_encoding(tokens.FALLBACK)
    path = tokens.bound_file(tokens.FALLBACK)
    path.write_bytes(path.read_bytes()[:-10])
    tokens.bound_for.cache_clear()
    assert tokenbound.load(path) is None and not tokens.LazyCounter("gpt-4").surely_within("word " * 1000, 3000)
