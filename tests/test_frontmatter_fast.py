"""The YAML fast path: whatever it answers is exactly what libyaml/PyYAML answers; otherwise it declines."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from enrich.frontmatter import fast_yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SCALARS = [
    "002", "008", "010", "00", "0", "09", "-002", "+002", "1_000", "0x1f", "12", "3.5", "1e3", "2026-02-22",
    "2026-13-01", "yes", "No", "on", "null", "~", "true", "word", "two words", "a-b", "c.d", "中文", "caf\u00e9",
    '"quoted"', '"with \\"escape\\""', "'single'", "a: b", "a #c", "#c", "[a, b]", "[]", "[a,]", "[a, yes]",
    "[1a, b]", "[a b, 中文]", "[a: b]", '["rss", "engineering"]', "{a: b}", "- x", "&anchor", "*alias", "!tag",
    "%x", "@x", "`x", "|", ">", "a,b", "x]", "1:20", ".inf", "NaN",
    '{"a": "b"}', '{"a":"b"}', '{"a": "b", "a": "c"}', '{"a": 1}', "{}", '{"a": "x: y"}', '{"k": "中文"}',
    '{"a": "b"} # c', '{"a": ["x"]}', '{"a": "#x"}', '{"at": "2026-11-29T03:04:24Z", "model": "m"}',
]
KEYS = ["id", "title", "tags", "aliases", "date", "x-y", "k_1"]


def _value(draw: Any) -> str:
    """One value: inline scalar, or a block list in one of the indent styles."""
    if draw(st.booleans()):
        return " " + draw(st.sampled_from(SCALARS))
    indent = draw(st.sampled_from(["", "  ", "    ", "\t"]))
    items = draw(st.lists(st.sampled_from(SCALARS + [""]), min_size=1, max_size=3))
    return "".join(f"\n{indent}- {item}" for item in items)


@st.composite
def frontmatter(draw: Any) -> str:
    """A small frontmatter body of 1 to 4 keys (keys may repeat)."""
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=4))
    return "\n".join(f"{key}:{_value(draw)}" for key in keys)


def _yaml(raw: str) -> Any:
    """What YAML reads, or an error marker."""
    try:
        return yaml.load(raw, Loader=LOADER)
    except yaml.YAMLError:
        return "ERROR"


@settings(max_examples=600, deadline=None)
@given(frontmatter())
def test_fast_path_agrees_with_yaml(raw: str) -> None:
    fast = fast_yaml(raw)
    assert fast is None or fast == _yaml(raw)


@pytest.mark.parametrize(
    "raw",
    ["id: 002\ntitle: x", "id: 008", "tags: [reading, research]", "tags:\n  - zk-core\n  - linking\naliases: [linking]",
     "tags:\n- a\n- b", 'tags: ["rss","engineering"]\ndate: 2026-02-22',
     'enriched: {"model": "gpt-4o-mini", "prompt": "zh-7648100624b9", "at": "2026-11-29T03:04:24Z", "content": "cdd5"}'],
)
def test_fast_path_takes_the_vault_sample_shapes(raw: str) -> None:
    assert fast_yaml(raw) is not None and fast_yaml(raw) == yaml.load(raw, Loader=LOADER)


def _key_span_by_lines(text: str, fm: Any, key: str) -> tuple[int, int] | None:
    """The key span as the line-by-line scan found it before the pattern search (the reference)."""
    from enrich.frontmatter import _TOP_KEY

    pos, found = fm.body_start, None
    while pos < fm.body_end:
        nl = text.find("\n", pos, fm.body_end)
        line_end = fm.body_end if nl == -1 else nl + 1
        line = text[pos:line_end].rstrip("\r\n")
        is_top = bool(line) and not line[0].isspace() and not line.startswith("- ")
        if found is not None and is_top and not line.startswith("#"):
            return found, pos
        m = _TOP_KEY.match(line)
        if found is None and m and m.group(1) == key:
            found = pos
        pos = line_end
    return (found, fm.body_end) if found is not None else None


_FM_LINES = st.sampled_from([
    "tags: [a, b]", "tags:", "  - x", "- y", "tags : 1", "tagsx: 2", "tags-x: 3", " tags: 4", "# tags: 5", "",
    "title: T", "enriched: {\"a\": 1}", "enriched:x", "\ttags: 6", "tags:\r", "x: tags: 7", "_k: 8",
])


@settings(max_examples=500, deadline=None)
@given(st.lists(_FM_LINES, max_size=12), st.sampled_from(["\n", "\r\n"]), st.sampled_from(["tags", "enriched", "a b", "x"]))
def test_key_span_search_agrees_with_the_line_scan(lines: list[str], nl: str, key: str) -> None:
    from enrich.frontmatter import _yaml_key_span, parse

    text = "---" + nl + "".join(line + nl for line in lines) + "---" + nl + "body" + nl
    fm = parse(text)
    assert fm is not None
    assert _yaml_key_span(text, fm, key) == _key_span_by_lines(text, fm, key)
