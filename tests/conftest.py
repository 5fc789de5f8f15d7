"""Shared pytest fixtures."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakeserver import FakeOpenAI  # noqa: E402


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A scripted fake OpenAI-compatible server on 127.0.0.1; see tests/fakeserver.py."""
    with FakeOpenAI() as server:
        yield server
