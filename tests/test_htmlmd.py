"""HTML -> Markdown: safe (no scripts, handlers or unsafe URLs), clean, and never breaking the note's sections."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from enrich.htmlmd import html_to_markdown, html_to_text, safe_url, text_to_markdown
from enrich.notes import parse_text
from enrich.roles import default_roles
from enrich.template import Entry, render_note

BASE = "https://blog.example.com/posts/a/"


def md(html: str) -> str:
    """Convert with the test base URL."""
    return html_to_markdown(html, BASE)


# ---------------------------------------------------------------- sanitising


@pytest.mark.parametrize("tag", ["script", "style", "iframe", "object", "form", "noscript", "template", "svg", "video"])
def test_dangerous_elements_are_dropped_with_their_content(tag: str) -> None:
    out = md(f"<p>before</p><{tag} src='x'>secret <b>payload</b></{tag}><p>after</p>")
    assert "secret" not in out and "payload" not in out
    assert "before" in out and "after" in out


def test_event_handlers_and_javascript_urls_are_removed() -> None:
    html = (
        '<p onclick="steal()" onmouseover="x()">Click <a href="javascript:alert(1)">me</a> '
        '<a href=" JaVaScRiPt:alert(1)">upper</a> <a href="java&#x09;script:alert(1)">tab</a> '
        '<a href="data:text/html;base64,PHNjcmlwdD4=">data</a> <a href="vbscript:x">vb</a></p>'
        '<img src="x.png" onerror="steal()" alt="pic"><img src="data:image/png;base64,AAAA" alt="inline">'
    )
    out = md(html)
    assert "onclick" not in out and "onerror" not in out and "steal" not in out
    assert "javascript" not in out.lower() and "data:" not in out and "vbscript" not in out
    assert "Click me upper tab data vb" in out
    assert "![pic](https://blog.example.com/posts/a/x.png)" in out
    assert "inline" not in out


def test_unclosed_script_drops_the_rest_and_void_embed_does_not() -> None:
    assert "after" in md("<embed src='a.swf'><p>after</p>")
    assert "alert" not in md("<p>ok</p><script>alert(1)")


def test_text_that_looks_like_markup_stays_text() -> None:
    out = md("<p>[click](javascript:alert(1)) and [[Wiki Link]] and &lt;script&gt;alert(1)&lt;/script&gt; &amp;lt;</p>")
    assert "](javascript" not in out.replace("\\](", "")
    assert "[[" not in out
    assert "<script" not in out and "&lt;script>" in out
    assert "&amp;lt;" in out


def test_structure_lines_in_text_are_escaped() -> None:
    out = md("<p># not a heading</p><p>## 关键观点</p><p>---</p><p>```</p><p>~~~</p><p>===</p>")
    for line in out.splitlines():
        assert not re.match(r"^ {0,3}(#{1,6}\s|```|~~~|-{3,}\s*$|={3,}\s*$)", line), line


# ---------------------------------------------------------------- formatting


def test_headings_are_demoted_to_level_four_or_lower() -> None:
    out = md("<h1>One</h1><h2>Two</h2><h3>Three</h3><h6>Six</h6><h2>C #</h2>")
    assert out.splitlines()[::2] == ["#### One", "##### Two", "###### Three", "###### Six", "##### C \\#"]
    assert not re.search(r"^#{1,3} ", out, re.MULTILINE)


def test_links_images_and_relative_urls() -> None:
    out = md('<p>See <a href="../b/">the other post</a> and <a href="https://x.org/a b(1)">x</a>.</p>'
             '<a href="https://e.com"><img src="/i.png" alt="logo [big]"></a>')
    assert "[the other post](https://blog.example.com/posts/b/)" in out
    assert "[x](https://x.org/a%20b%281%29)" in out
    assert "[![logo \\[big\\]](https://blog.example.com/i.png)](https://e.com)" in out


def test_relative_links_without_base_become_text() -> None:
    assert html_to_markdown('<a href="/x">text</a> <img src="/i.png" alt="a">') == "text"


def test_lists_nested_and_ordered() -> None:
    out = md("<ul><li>one</li><li>two<ul><li>nested</li></ul></li></ul><ol start='3'><li>a</li><li>b</li></ol>")
    assert out == "- one\n- two\n  - nested\n\n3. a\n4. b"


def test_code_blockquote_emphasis_entities_whitespace() -> None:
    html = (
        "<blockquote><p>quoted   line</p><p>second</p></blockquote>"
        "<pre><code class='language-python'>x = 1\n# comment\nprint('```')</code></pre>"
        "<p>Use <code>a &lt; b</code>, <strong> bold </strong>and <em>it</em> &mdash; caf&eacute;&nbsp;ok</p>"
    )
    out = md(html)
    assert "> quoted line\n>\n> second" in out
    assert "````python\nx = 1\n# comment\nprint('```')\n````" in out
    assert "Use `a < b`, **bold** and *it* — café ok" in out


def test_tables_and_line_breaks() -> None:
    out = md("<table><tr><th>a</th><th>b|c</th></tr><tr><td>1</td><td>2<br>3</td></tr></table><p>x<br>y</p>")
    assert "| a | b\\|c |\n| --- | --- |\n| 1 | 2 3 |" in out
    assert out.endswith("x\ny")


def test_html_to_text_and_text_to_markdown() -> None:
    assert html_to_text("Graph-aware <em>retrieval</em> &amp; more<script>x()</script>") == "Graph-aware retrieval & more"
    assert text_to_markdown("Line one\n# two\n\n\nPara <b>two</b>") == "Line one\n\\# two\n\nPara &lt;b>two&lt;/b>"


def test_safe_url() -> None:
    assert safe_url("/a", "https://h.com/x/") == "https://h.com/a"
    assert safe_url("mailto:a@b.c") == "mailto:a@b.c"
    assert safe_url("\njavascript:alert(1)") is None
    assert safe_url("file:///etc/passwd") is None
    assert safe_url("relative") is None


# ---------------------------------------------------------------- invariant

_TAGS = ["p", "h1", "h2", "h3", "ul", "ol", "li", "pre", "code", "blockquote", "b", "a", "table", "tr", "td", "div", "br"]
_pieces = st.one_of(
    st.sampled_from([f"<{t}>" for t in _TAGS] + [f"</{t}>" for t in _TAGS]),
    st.sampled_from(["## 关键观点", "# Title", "---", "```", "~~~", "\n", "  ", "<!--", "-->", "[[x]]", "`", "|", "> ", "- "]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_pieces, max_size=40).map("".join))
@example("- ```")  # a fence opening a list item once hid the sections after it
def test_any_html_keeps_the_note_sections_intact(html: str) -> None:
    content = html_to_markdown(html, BASE)
    entry = Entry(feed_id="f", source="S", title="T", url="https://x.com/a", content=content)
    text = render_note(entry, "20260301-rss-f-001-t", date(2026, 3, 1))
    note = parse_text(text, "n.md")
    assert note.frontmatter is not None and note.frontmatter.error is None
    assert [s.role for s in note.sections if s.level == 2] == ["source", "content", "key_points", "thoughts", "related"]
    roles = default_roles()
    kp = note.section("key_points")
    assert kp is not None and roles.is_placeholder(note.body(kp))


@pytest.mark.parametrize("text", ["- ```", "1. ~~~x", "* ````", "+ ```py"])
def test_a_fence_after_a_list_marker_is_escaped(text: str) -> None:
    md = html_to_markdown(f"<p>{text}</p>")
    assert "\\" in md and md.replace("\\", "", 1) == text
