"""Faster text passes return exactly what their plain formulations return, for any text: visible_text (the original
regex-only implementation), clean_text (its regex pass)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from enrich import visible
from enrich.prepare import _PARAS

# The implementation before the speed-up, verbatim: the reference the new one must match bit for bit.
_COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)
_BLOCK_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_TAG_RE = re.compile(r"</?[A-Za-z][^>]*>")
_MD_IMAGE_RE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_LINK_RE = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_WIKILINK_RE = re.compile(r"\[\[([^\]|]*)(?:\|([^\]]*))?\]\]")
_URL_RE = re.compile(r"(?:https?|ftp)://\S+|www\.\S+")
_LINE_MARK_RE = re.compile(
    r"(?m)^[ \t]{0,3}(?:#{1,6}[ \t]+|>[ \t]?|[-*+][ \t]+|\d+\.[ \t]+)"
)
_EMPHASIS_RE = re.compile(r"\*\*|__|~~|`+")


def _reference_visible_text(content: str) -> str:
    """Return content with HTML/Markdown markup, image tags and URLs removed."""
    text = content
    if "<" in text:  # each pass runs only when the text can match it
        text = _TAG_RE.sub(" ", _BLOCK_RE.sub(" ", _COMMENT_RE.sub(" ", text)))
    if "](" in text:
        text = _MD_IMAGE_RE.sub(" ", text)
    if "[[" in text:
        text = _WIKILINK_RE.sub(lambda m: m.group(2) or m.group(1), text)
    if "](" in text:
        text = _MD_LINK_RE.sub(r"\1", text)
    if "://" in text or "www." in text:
        text = _URL_RE.sub(" ", text)
    text = _EMPHASIS_RE.sub("", _LINE_MARK_RE.sub("", text))
    text = html.unescape(text)
    return " ".join(text.split())


ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "vault-sample"
ALPHABET = "*_~`[]()!<>#-+.0123456789:/whtpf \n\t&;|\r\u00a0\u3000abcxyzWHTPF中文"
TOKENS = [
    "http://", "https://", "HTTP://", "ftp://", "ftp:/", "www.", "www", "://", "**", "__", "~~", "`", "```", "[[",
    "]]", "](", "![", "[", "]", "(", ")", "|", "<!--", "-->", "<script>", "</script>", "<style>", "</STYLE >", "<b>",
    "</p>", "<a href='x'>", "&amp;", "&#39;", "&lt", "&nbsp;", "\n", "\n\n", "\n \n", "# ", "###### ", "####### ",
    "1. ", "12.\t", "> ", ">", "- ", "* ", "+ ", "   ", "    ", "\t", "\r\n", "_**_", "~__~", "*`*", "中文", "٣. ",
]
texts = st.lists(st.sampled_from(TOKENS + list(ALPHABET)), max_size=40).map("".join)  # cheaper to draw than st.text
marks = st.text(alphabet="*_~`a \t\n#>1.-+", max_size=24)  # dense in emphasis runs and line marks


def _check_document(path: Path) -> None:
    """The whole note and each of its paragraphs (as article_text splits them) match the reference."""
    content = path.read_text(encoding="utf-8", errors="replace")
    assert visible.visible_text(content) == _reference_visible_text(content), path
    for para in _PARAS.split(content):
        assert visible.visible_text(para) == _reference_visible_text(para), (path, para[:80])


@settings(max_examples=1500, deadline=None)
@given(texts)
def test_visible_text_matches_reference(text: str) -> None:
    assert visible.visible_text(text) == _reference_visible_text(text)
    assert visible._strip_urls(text) == _URL_RE.sub(" ", text)


@settings(max_examples=800, deadline=None)
@given(marks)
def test_emphasis_and_line_marks_match_the_single_regex_passes(text: str) -> None:
    assert visible._strip_emphasis(text) == _EMPHASIS_RE.sub("", text)
    assert visible._strip_line_marks(text) == _LINE_MARK_RE.sub("", text)
    assert visible.visible_text(text) == _reference_visible_text(text)


@pytest.mark.parametrize(
    "text",
    ["~__~", "_**_", "*`*", "`**`", "***", "____", "~~~", "a**b__c~~d`e", "x\n# h\n\n> q\n1. i\n- l\n    - deep",
     "# only", "\n# after newline", "see https://a.b/c and www.d.e and ftp://f/g", "www.only.here", "http://x ftp://y"],
)
def test_known_tricky_inputs(text: str) -> None:
    assert visible.visible_text(text) == _reference_visible_text(text)


def test_every_fixture_note_and_paragraph_matches_reference() -> None:
    docs = sorted((ROOT / "fixtures").rglob("*.md")) + sorted((ROOT / "fixtures" / "feeds").glob("*.*ml"))
    assert len(docs) > 10
    for path in docs:
        _check_document(path)


@pytest.mark.skipif(not any(SHARED.glob("*.md")), reason="no ../shared/vault-sample notes")
def test_every_shared_sample_note_and_paragraph_matches_reference() -> None:
    for path in sorted(SHARED.glob("*.md")):
        _check_document(path)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab. \t\n\r") + ["\u00a0", "\u3000", "\u200b", "\u2003", "\x07", "é", "中"])))
def test_clean_text_agrees_with_the_plain_formulation(text: str) -> None:
    """clean_text's fast path (printable, no double space) is the regex pass it skips."""
    import unicodedata

    from enrich.llm import _SPACES_RE, clean_text

    kept = "".join(" " if c == "\t" else c for c in text if c in "\n\r\t" or unicodedata.category(c) not in ("Cc", "Cf", "Co", "Cs"))
    assert clean_text(text) == re.sub(_SPACES_RE, " ", kept).strip()


def _unusable_as_first_written(content: str, min_chars: int) -> str | None:
    """unusable_reason before the plain-start shortcut."""
    if visible.looks_binary(content):
        return "binary"
    prefix = visible._SAMPLE_PREFIX
    cut = max(content.rfind("\n", 0, prefix), content.rfind(">", 0, prefix))
    if len(content) > prefix and cut > 0 and visible._letters(visible.visible_text(content[: cut + 1]), min_chars) >= min_chars:
        return None
    letters = visible._letters(visible.visible_text(content), max(min_chars, 1))
    if letters == 0 and visible._HAS_TAG_RE.search(content):
        return "html-without-text"
    return "too-short" if letters < min_chars else None


LINES = ["word and more words", "", "# head", "- item", "**bold** _it_", "see https://x.y/a?b=c", "www.site.org/p",
         "[link](http://u)", "<b>tag</b>", "<!-- note", "-->", "<script>", "</script>", "&amp; &#65;", "1234 5678",
         "ftp://host/f", "> quote", "`code`", "[[Wiki|alias]]", "![img](p.png)", "![alt starts", "](p.png)", "<a",
         'href="x">']
PIECES = st.lists(st.sampled_from(LINES), max_size=4)


@settings(max_examples=600, deadline=None)
@given(PIECES, st.lists(st.sampled_from(LINES), min_size=1, max_size=8), st.integers(1, 150), PIECES,
       st.sampled_from([1, 10, 40, 80, 200]))
@example(["![alt starts"], ["word and more words"], 150, ["](p.png)"], 80)  # an image's alt text over many lines
@example(["<!-- note"], ["word and more words"], 150, ["-->"], 80)  # a comment over many lines
@example(["<a"], ['href="x"', "word and more words"], 150, [">"], 80)  # a tag over many lines
def test_unusable_reason_agrees_with_the_whole_text_check(
    head: list[str], body: list[str], times: int, tail: list[str], min_chars: int
) -> None:
    """The plain-start shortcut gives the answer the whole content gives (long notes; markup anywhere, also
    opened at the start and closed after many lines)."""
    content = "\n".join(head + body * times + tail)
    assert visible.unusable_reason(content, min_chars=min_chars) == _unusable_as_first_written(content, min_chars)
