"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakeserver import FakeOpenAI

# enrich keeps parsed tiktoken tables under $XDG_CACHE_HOME/enrich: tests (and the processes they start) use their own.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="enrich-test-cache-")


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A scripted fake OpenAI-compatible server on 127.0.0.1; see tests/fakeserver.py."""
    with FakeOpenAI() as server:
        yield server
