"""clean_text: the fast path for printable text gives what the character-by-character path gives."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from enrich.llm import clean_text


def _clean_reference(text: str) -> str:
    """clean_text written the slow, obvious way."""
    kept = [" " if ch == "\t" else ch for ch in text
            if ch in "\r\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Co", "Cs")]
    return re.sub(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+", " ", "".join(kept)).strip()


@given(st.text(alphabet="ab 中\u3000\u00a0\u200b\u2060\t\n\r\x01\ue000\u2028\u0378é", max_size=16))
def test_clean_text_fast_path_matches_reference(text: str) -> None:
    assert clean_text(text) == _clean_reference(text)
