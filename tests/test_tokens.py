"""Token counting: the encoding's parsed tables are cached per user, and a damaged cache is rebuilt."""

from __future__ import annotations

from pathlib import Path

import pytest
import tiktoken

from enrich import tokens

TEXT = "héllo wörld 你好 <|endoftext|> [[link]]"


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


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
