"""The note model: byte-exact round trips, section spans, style-preserving edits."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enrich.errors import BadFrontmatterError, NotUtf8Error
from enrich.notes import Note, append_section, parse_note, parse_text, replace_body, reparsed, set_meta

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "fixtures" / "vault"


def shared_files() -> list[Path]:
    """Every real note in ../shared (empty when it is absent)."""
    if not SHARED.is_dir():
        return []
    return sorted((SHARED / "vault-sample").glob("*.md")) + sorted((SHARED / "seed").glob("*.txt"))


@pytest.mark.parametrize("path", sorted(FIXTURES.rglob("*.md")), ids=lambda p: p.name)
def test_fixture_round_trip(path: Path) -> None:
    raw = path.read_bytes()
    assert parse_note(raw, path).render() == raw


def test_shared_round_trip() -> None:
    files = shared_files()
    if not files:
        pytest.skip("../shared is absent")
    assert len(files) == 35
    for path in files:
        raw = path.read_bytes()
        assert parse_note(raw, path).render() == raw, path.name


def test_sections_and_roles_of_an_rss_note() -> None:
    note = parse_note((FIXTURES / "20260301-rss-example_blog-001-small-notes-compound.md").read_bytes())
    assert [s.role for s in note.sections] == ["source", "content", "key_points", "thoughts", "related"]
    assert note.title == "Small Notes Compound"
    assert note.text[note.trailer_start :].startswith("---\n*RSS")
    assert "核心主题涉及" in note.body(note.sections[2])


def test_crlf_bom_and_missing_final_newline() -> None:
    crlf = (FIXTURES / "20260302-rss-example_blog-002-attention-is-a-budget.md").read_bytes()
    note = parse_note(crlf)
    assert note.newline == "\r\n"
    edited = replace_body(note, note.section("key_points"), ["- a point that is long enough."])
    assert b"\r\n- a point that is long enough.\r\n" in edited.render()
    assert b"\n" not in edited.render().replace(b"\r\n", b"")
    bom = (FIXTURES / "20260303-rss-cn_blog-001-写作即思考.md").read_bytes()
    assert parse_note(bom).bom and parse_note(bom).render().startswith(b"\xef\xbb\xbf")
    nofinal = (FIXTURES / "20260304-rss-arxiv_cs-001-graph-aware-retrieval-for-personal-notes.md").read_bytes()
    assert not nofinal.endswith(b"\n") and parse_note(nofinal).render() == nofinal


def test_duplicate_headings_and_no_frontmatter() -> None:
    note = parse_note((FIXTURES / "inbox" / "003-no-frontmatter.md").read_bytes())
    assert note.frontmatter is None
    assert [s.title for s in note.sections] == ["Details", "Details"]
    second = note.sections[1]
    edited = replace_body(note, second, ["new"])
    assert "First block of details." in edited.text and "A second heading" not in edited.text


def test_headings_inside_code_fences_are_not_sections() -> None:
    note = parse_text("# T\n\n## A\n\n```\n## not a heading\n```\n\n## B\nx\n")
    assert [s.title for s in note.sections] == ["A", "B"]


def test_a_fence_opening_a_list_item_hides_headings() -> None:
    note = parse_text("# T\n\n## A\n\n- ```\n  ## 关键观点\n  ```\n\n## B\nx\n")
    assert [s.title for s in note.sections] == ["A", "B"]


def test_replace_key_points_changes_only_that_span() -> None:
    path = FIXTURES / "20260301-rss-example_blog-001-small-notes-compound.md"
    note = parse_note(path.read_bytes())
    kp = note.section("key_points")
    assert kp is not None
    edited = replace_body(note, kp, ["- One.", "- Two."])
    assert edited.text[: kp.body_start] == note.text[: kp.body_start]
    assert edited.text.endswith(note.text[kp.end :])
    assert edited.body(edited.section("key_points")) == "\n- One.\n- Two.\n\n"


def test_set_meta_keeps_inline_style_and_other_keys() -> None:
    text = '---\nid: x\ntags: ["rss","ai"]\ntitle: "A: B"\n---\n\n# A: B\n'
    note = parse_text(text)
    out = set_meta(note, "tags", ["rss", "ai", "llm"]).text
    assert out == text.replace('["rss","ai"]', '["rss","ai","llm"]')
    spaced = parse_text('---\ntags: ["a", "b"]\n---\nbody\n')
    assert '["a", "b", "c"]' in set_meta(spaced, "tags", ["a", "b", "c"]).text


def test_set_meta_block_list_and_new_key() -> None:
    text = "---\ntags:\n  - a\n  - b\nother: 1\n---\nbody\n"
    out = set_meta(parse_text(text), "tags", ["a", "b", "c"]).text
    assert out == "---\ntags:\n  - a\n  - b\n  - c\nother: 1\n---\nbody\n"
    added = set_meta(parse_text(text), "enriched", {"model": "m"}).text
    assert added.endswith('other: 1\nenriched: {"model": "m"}\n---\nbody\n')
    assert parse_text(added).meta["enriched"] == {"model": "m"}


def test_set_meta_json_frontmatter() -> None:
    text = '---\n{\n  "id": "x",\n  "tags": [\n    "a"\n  ],\n  "n": 1\n}\n---\nbody\n'
    out = set_meta(parse_text(text), "tags", ["a", "b"]).text
    assert parse_text(out).meta == {"id": "x", "tags": ["a", "b"], "n": 1}
    assert out.startswith('---\n{\n  "id": "x",\n')
    out2 = set_meta(parse_text(text), "enriched", {"m": 1}).text
    assert parse_text(out2).meta["enriched"] == {"m": 1} and '"n": 1' in out2


def test_no_frontmatter_gets_one() -> None:
    out = set_meta(parse_text("# T\n\nbody\n"), "tags", ["x"]).text
    assert out == '---\ntags: ["x"]\n---\n# T\n\nbody\n'


def test_bad_input_errors() -> None:
    with pytest.raises(NotUtf8Error):
        parse_note(b"---\ntitle: caf\xe9\n---\n", "bad.md")
    broken = parse_note(b"---\n: : [\n  - x: {\n---\nbody\n", "bad.md")
    assert broken.render() == b"---\n: : [\n  - x: {\n---\nbody\n"  # rendering never needs the data
    with pytest.raises(BadFrontmatterError):
        broken.meta


def test_lenient_frontmatter_reads_unquoted_colons() -> None:
    note = parse_text("---\ntitle: AI Gamestore: Scalable\ntags: [\"a\"]\n---\n")
    assert note.meta["title"] == "AI Gamestore: Scalable"
    assert note.frontmatter is not None and note.frontmatter.error


def test_append_section_goes_before_the_footer() -> None:
    note = parse_text("# T\n\n## A\n\ntext\n\n---\n*footer*\n")
    out = append_section(note, "相关链接", ["- [[x]]"]).text
    assert out == "# T\n\n## A\n\ntext\n\n## 相关链接\n\n- [[x]]\n\n---\n*footer*\n"


# ---------------------------------------------------------------- property tests

_line = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=30)
_heading = st.sampled_from(["来源信息", "核心内容", "关键观点", "深度思考", "相关链接", "Notes", "Details"])


@st.composite
def notes(draw: st.DrawFn) -> tuple[str, str]:
    """Random notes: optional frontmatter, title, sections with random lines, random newline style."""
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    parts: list[str] = []
    if draw(st.booleans()):
        parts.append(f'---{nl}id: n1{nl}tags: ["a", "b"]{nl}---{nl}')
    parts.append(f"# {draw(_line).strip() or 'T'}{nl}{nl}")
    for _ in range(draw(st.integers(0, 5))):
        parts.append(f"## {draw(_heading)}{nl}")
        lines = draw(st.lists(_line, max_size=4))
        parts.append("".join(f"{ln}{nl}" for ln in lines if not ln.lstrip().startswith(("#", "---", "```", "~~~"))))
    text = "".join(parts)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    return text, nl


@settings(max_examples=200, deadline=None)
@given(notes(), st.booleans())
def test_generated_notes_round_trip(case: tuple[str, str], bom: bool) -> None:
    text, _ = case
    raw = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    assert parse_note(raw).render() == raw


@settings(max_examples=200, deadline=None)
@given(notes(), st.lists(st.text(alphabet="abc xyz", min_size=1, max_size=10), min_size=1, max_size=3))
def test_editing_one_section_changes_only_its_span(case: tuple[str, str], lines: list[str]) -> None:
    text, _ = case
    note = parse_text(text)
    if not note.sections:
        return
    sec = note.sections[-1]
    edited = replace_body(note, sec, lines)
    assert edited.text[: sec.body_start] == note.text[: sec.body_start]
    assert edited.text[len(edited.text) - (len(note.text) - sec.end) :] == note.text[sec.end :]
    assert [s.title for s in edited.sections] == [s.title for s in note.sections]


_edit_line = st.sampled_from(["- a point", "plain text", "## Sub", "```", "- ```py", "---", "~~~", "- [[x]]", ""])
_edit = st.one_of(
    st.tuples(st.just("body"), st.integers(0, 9), st.lists(_edit_line, max_size=3)),
    st.tuples(st.just("meta"), st.sampled_from(["tags", "enriched", "id"]), st.lists(st.sampled_from(["a", "b c"]), max_size=2)),
)


def _model(note: Note) -> tuple[object, ...]:
    """Everything the parser derives from the text."""
    return note.text, note.sections, note.body_start, note.trailer_start, note.title, note.frontmatter


@settings(max_examples=300, deadline=None)
@given(notes(), st.lists(_edit, min_size=1, max_size=4))
def test_chained_edits_equal_a_fresh_parse(case: tuple[str, str], edits: list[tuple[str, object, list[str]]]) -> None:
    """replace_body / set_meta shift offsets instead of re-parsing; the result must equal a fresh parse."""
    note = parse_text(case[0])
    for kind, where, values in edits:
        if kind == "body":
            if not note.sections:
                continue
            note = replace_body(note, note.sections[int(str(where)) % len(note.sections)], values)
        else:
            note = set_meta(note, str(where), values)
        assert _model(note) == _model(reparsed(note))


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(["\n", "\r\n", "\r", " ", "  ", "\t", "#", "##", "# x", "-", "*", "_", "`", "```", "~~~",
                              "1.", "2)", "a", "b c", "---", "***", "- ", "> "]), max_size=40),
    st.integers(min_value=0, max_value=60),
)
def test_candidate_lines_are_what_the_multiline_pattern_finds(parts: list[str], start: int) -> None:
    """The newline-anchored scan finds the same lines, at the same offsets, as _CANDIDATE.finditer."""
    from enrich.notes import _CANDIDATE, _candidate_lines

    text = "".join(parts)
    start = min(start, len(text))
    expected = [(m.start(), m.end(), m.group()) for m in _CANDIDATE.finditer(text, start)]
    assert list(_candidate_lines(text, start)) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["{{title}}", "{{ content }}", "{{", "}}", "{title}", "text ", "{{bad-name}}", "\n"]),
                max_size=12),
       st.text(alphabet="{}ab $\\1", max_size=8))
def test_prompt_rendering_substitutes_each_variable_once(parts: list[str], value: str) -> None:
    """The pieces-and-join fill gives what one regex substitution pass gives; values are never templates."""
    import re

    from enrich.errors import PromptError
    from enrich.prompts import _VAR, PromptSet

    template = "".join(parts)
    prompts = PromptSet("en", "sys {{title}}", template, "v1")
    values = {"title": value, "content": value + "{{title}}"}
    if set(_VAR.findall(template)) - set(values):
        with pytest.raises(PromptError, match="needs values for"):
            prompts.render(values)
        return
    expect = re.sub(_VAR, lambda m: values[m.group(1)], template)
    assert prompts.render(values)[1]["content"] == expect
    assert prompts.render(values)[0]["content"] == "sys " + value


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["^TODO$", "^(a)\\1$", "(?i)^fixme$", "^x.*", "^[(（]暂无[)）]$", "^b|^c"]), max_size=4),
       st.sampled_from(["TODO", "todo", "aa", "ab", "FIXME", "xyz", "(暂无)", "b", "c", "d", "- TODO", ""]))
def test_placeholder_lines_match_as_each_pattern_alone(patterns: list[str], line: str) -> None:
    """The patterns joined in one alternation (or each alone, with flags or back-references) match what each did."""
    from enrich.roles import RoleTable, compile_patterns, default_roles

    base = default_roles()
    table = RoleTable(base.names, base.headings, compile_patterns(patterns))
    text = line.removeprefix("- ").strip()
    assert table.is_placeholder_line(line) == (not text or any(p.match(text) for p in table.placeholder_patterns))
