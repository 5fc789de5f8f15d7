"""Mojibake detection and recovery (enrich.mojibake, enrich.repair, enrich.charfreq) and unusable content (enrich.visible).

Recovery accuracy measured while writing these tests (default table):
- seed note /work/shared/seed/000_*.txt: 100 % (every CJK char, the smart
  quotes and the emoji; 0 unresolved), with the bundled table alone and with
  the bundled table merged with the vault-sample's own frequencies;
- the 32 readable vault-sample notes mojibaked as cp1252 and as cp1254 (6,496
  non-ASCII chars): 99.6 % of chars (27 errors, 24 of them cp1254 characters
  that lost both continuation bytes, e.g. 后 -> 子);
- random strings, CJK chars drawn by frequency from the top 500 + ASCII,
  cp1252: 97.5 % of chars (cp1254: 95.6 %).  Random strings have no word
  context, so characters that differ only in a dropped byte (来/接, 息/每)
  fall back to the unigram choice: 100 % is not reachable here.
"""

from __future__ import annotations

import dataclasses
import difflib
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enrich import repair
from enrich.charfreq import char_frequencies, load_default_freq, merge_frequencies
from enrich.mojibake import looks_mojibake
from enrich.repair import RepairResult, fix_mojibake
from enrich.visible import unusable_reason, visible_text

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
SEED = SHARED / "seed" / "000_f915968f6288a123.txt"
SAMPLE = SHARED / "vault-sample"
GZIP_NOTES = ("liberate-your-openclaw", "falcon-perception")
HEADINGS = ("来源信息", "核心内容", "关键观点", "深度思考", "相关链接")
# Every byte a cp1252/cp1254 decode may drop (plus soft hyphens stripped later).
HOLES = frozenset(b"\x81\x8d\x8e\x8f\x90\x9d\x9e\xad")


def moji(text: str, codec: str = "cp1252") -> str:
    """UTF-8 text decoded with codec, undefined bytes dropped (the bug we repair)."""
    return text.encode("utf-8").decode(codec, errors="ignore")


def moji_all_holes(text: str) -> str:
    """Like moji, but dropping every hole byte the repairer may re-insert."""
    data = bytes(b for b in text.encode("utf-8") if b not in HOLES)
    return data.decode("cp1252", errors="ignore")


def char_errors(want: str, got: str) -> int:
    """Count differing characters (edit-style) between two strings."""
    if len(want) == len(got):
        return sum(a != b for a, b in zip(want, got))
    ops = difflib.SequenceMatcher(None, want, got, autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for op, i1, i2, j1, j2 in ops if op != "equal")


def section(text: str, title: str) -> str | None:
    """Return the body of a '## title' section, or None."""
    m = re.search(rf"^## {title}\s*\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    return m.group(1) if m else None


def sample_notes() -> list[Path]:
    """The vault-sample notes, or skip when /work/shared is not there."""
    if not SAMPLE.is_dir():
        pytest.skip("shared vault-sample not available")
    return sorted(SAMPLE.glob("*.md"))


def seed_text() -> str:
    """The mojibake seed note, or skip when /work/shared is not there."""
    if not SEED.is_file():
        pytest.skip("shared seed not available")
    return SEED.read_text("utf-8")


def readable_notes() -> list[tuple[Path, str]]:
    """Sample notes that are not gzip garbage."""
    return [
        (p, p.read_text("utf-8"))
        for p in sample_notes()
        if not any(g in p.name for g in GZIP_NOTES)
    ]


# ----------------------------------------------------------------- the seed


def test_seed_is_detected() -> None:
    assert looks_mojibake(seed_text())


def test_seed_headings_recovered() -> None:
    result = fix_mojibake(seed_text())
    assert result is not None
    for heading in HEADINGS:
        assert f"\n## {heading}\n" in result.text
    assert result.unresolved == 0


@pytest.mark.parametrize(
    "phrase",
    [
        "- **来源**: Lilian Weng's Blog",
        "- **发布时间**: 见原文",
        "- **原文链接**: https://lilianweng.github.io/",
        "- **采集时间**: 2026-02-21",
        "<!-- 对上述观点的反思、质疑、延伸问题 -->",
        "*RSS 自动采集永久化 - 处理时间: 2026-02-21*",
        "- 核心主题涉及Thinking和High-Quality",
        "- 内容质量评分: 0.75",
        "[[017-深度研究工具链]]",
        "[[018-研究扫描自动化的ZK集成策略]]",
        "nice feedback. 🙏 ]",
        "impression that “Everyone wants to do the model work, not the data work”",
    ],
)
def test_seed_body_reads_naturally(phrase: str) -> None:
    result = fix_mojibake(seed_text())
    assert result is not None
    assert phrase in result.text


def test_seed_recovered_with_vault_frequencies_merged() -> None:
    vault = char_frequencies(p.read_text("utf-8") for p in sample_notes())
    merged = merge_frequencies(load_default_freq(), vault)
    plain = fix_mojibake(seed_text())
    with_vault = fix_mojibake(seed_text(), merged)
    assert plain is not None and with_vault is not None
    assert with_vault.text == plain.text


def test_seed_is_stable_after_repair() -> None:
    result = fix_mojibake(seed_text())
    assert result is not None
    assert not looks_mojibake(result.text)
    assert fix_mojibake(result.text) is None


# -------------------------------------------------------------- vault-sample


def test_no_false_positive_on_vault_sample() -> None:
    for path in sample_notes():
        text = path.read_text("utf-8")
        assert not looks_mojibake(text), path.name
        assert fix_mojibake(text) is None, path.name


def test_gzip_notes_are_binary() -> None:
    paths = [p for p in sample_notes() if any(g in p.name for g in GZIP_NOTES)]
    assert len(paths) == 2
    for path in paths:
        content = section(path.read_text("utf-8"), "核心内容")
        assert content is not None
        assert unusable_reason(content) == "binary", path.name


def test_rss_notes_are_usable() -> None:
    checked = 0
    for path, text in readable_notes():
        content = section(text, "核心内容")
        if content is not None:
            assert unusable_reason(content) is None, path.name
            checked += 1
    assert checked >= 8


def test_short_karpathy_review_is_not_too_short() -> None:
    path = (
        SAMPLE / "20260222-rss-karpathy_blog-1771776452288-2025-llm-year-in-review.md"
    )
    sample_notes()
    content = section(path.read_text("utf-8"), "核心内容")
    assert content is not None and "<img" in content
    assert unusable_reason(content, min_chars=80) is None


def test_vault_sample_mojibake_round_trip_accuracy() -> None:
    total = errors = 0
    for _, text in readable_notes():
        for codec in ("cp1252", "cp1254"):
            result = fix_mojibake(moji(text, codec))
            assert result is not None
            total += sum(1 for c in text if not c.isascii())
            errors += char_errors(text, result.text)
    assert total > 5000
    assert 1 - errors / total >= 0.99  # measured 0.9958


# ---------------------------------------------------------- synthetic cases


@pytest.mark.parametrize(
    "original",
    [
        "## 来源信息\n## 核心内容\n## 关键观点\n## 深度思考\n## 相关链接",
        "信息检索和原文链接的质量很重要。",
        "这是一个关于笔记系统的测试：知识管理、卡片盒笔记法。",
        "模型规模提升带来社会认知能力显著改善（p<0.01）",
        "2026年3月：推理优化重大突破，吞吐量显著提升",
    ],
)
def test_synthetic_chinese_recovered(original: str) -> None:
    damaged = moji(original)
    assert damaged != original
    result = fix_mojibake(damaged)
    assert result is not None
    assert result.text == original
    assert result.unresolved == 0


def test_english_smart_quotes_and_emoji() -> None:
    original = "He said “it’s fine” — really… thanks 🙏 😂 👍 🔥 and café au lait"
    result = fix_mojibake(moji(original))
    assert result is not None
    assert result.text == original


def test_accented_letters_inside_ascii_words_are_kept() -> None:
    damaged = moji("你好世界，这是一个测试。") + " café naïve Straße"
    result = fix_mojibake(damaged)
    assert result is not None
    assert result.text == "你好世界，这是一个测试。 café naïve Straße"


def test_cp1254_variant_recovered() -> None:
    original = "原文链接：来源信息，关键观点 🙏"
    damaged = moji(original, "cp1254")
    assert "ğ" in damaged
    result = fix_mojibake(damaged)
    assert result is not None and result.text == original


def test_correct_chinese_inside_mojibake_note_is_untouched() -> None:
    text = "标题：" + moji("来源信息与核心内容") + "。结尾"
    result = fix_mojibake(text)
    assert result is not None
    assert result.text == "标题：来源信息与核心内容。结尾"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain ASCII only",
        "中文笔记，没有乱码。卡片盒笔记法 🙂",
        "Ça été très… déjà vu — naïve café « Zürich » Straße, São Paulo, Kraków",
        "Ñandú, señor, año, ¿qué? ¡sí! 50 °C ± 2 — “quoted” ‘single’",
        "Türkçe: ağaç, ışık, şeker, İstanbul, Ğ",
    ],
)
def test_correct_text_is_not_mojibake(text: str) -> None:
    assert not looks_mojibake(text)
    assert fix_mojibake(text) is None


def test_repair_result_is_frozen() -> None:
    result = RepairResult("x", 1, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.text = "y"  # type: ignore[misc]


def test_random_corpus_accuracy() -> None:
    freq = load_default_freq()
    cjk = sorted(
        (c for c in freq if "\u4e00" <= c <= "\u9fff"), key=lambda c: -freq[c]
    )[:500]
    weights = [freq[c] for c in cjk]
    rng = random.Random(1)
    total = errors = 0
    for _ in range(300):
        chars = [
            rng.choices(cjk, weights)[0]
            if rng.random() < 0.8
            else rng.choice("ab XY 12,.")
            for _ in range(30)
        ]
        original = "".join(chars)
        result = fix_mojibake(moji(original))
        got = result.text if result else moji(original)
        total += sum(1 for c in original if not c.isascii())
        errors += char_errors(original, got)
    assert 1 - errors / total >= 0.95  # measured 0.9745


# ------------------------------------------------------------- properties

_FREQ = load_default_freq()
_COMMON = sorted(
    (c for c in _FREQ if "\u4e00" <= c <= "\u9fff"), key=lambda c: -_FREQ[c]
)[:1500]
_LOSSLESS = [c for c in _COMMON if not HOLES & set(c.encode("utf-8"))]
_ASCII = st.sampled_from(list("abcXYZ 0123,.-:()[]#*\n"))
# No ASCII letters/digits: a lone lead char next to one is kept as a genuine
# accented letter by design (see test_accented_letters_inside_ascii_words_are_kept).
_PUNCT = st.sampled_from(list(" ,.-:()[]#*\n"))


def _mixed(
    cjk: list[str], ascii: st.SearchStrategy[str] = _ASCII
) -> st.SearchStrategy[str]:
    """Strings with at least three CJK chars from cjk, mixed with ASCII."""
    piece = st.one_of(st.sampled_from(cjk), ascii)
    return st.tuples(
        st.lists(st.sampled_from(cjk), min_size=3, max_size=3),
        st.lists(piece, max_size=40),
    ).map(lambda t: "".join(t[0]) + "".join(t[1]))


@settings(max_examples=150, deadline=None)
@given(_mixed(_LOSSLESS))
def test_property_lossless_chars_recovered_exactly(original: str) -> None:
    """Chars whose UTF-8 has no droppable byte survive the round trip exactly."""
    result = fix_mojibake(moji(original))
    assert result is not None
    assert result.text == original


@settings(max_examples=150, deadline=None)
@given(_mixed(_COMMON + list("，。、：“”（）🙏😂"), _PUNCT))
def test_property_repair_is_consistent_with_input(original: str) -> None:
    """With nothing unresolved, the repair re-damages into exactly its input."""
    damaged = moji_all_holes("来源信息" + original)  # prefix: long enough to detect
    result = fix_mojibake(damaged)
    assert result is not None
    if result.unresolved == 0:
        assert moji_all_holes(result.text) == damaged


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(_COMMON + list("，。🙂")), _ASCII), max_size=60
    ).map("".join)
)
def test_property_correct_cjk_never_flagged(text: str) -> None:
    assert not looks_mojibake(text)


# ------------------------------------------------------- frequency tables


def test_default_table() -> None:
    freq = load_default_freq()
    assert len(freq) >= 4000
    assert abs(sum(freq.values()) - 1) < 1e-6
    assert all(len(k) == 1 for k in freq)
    assert freq["的"] > freq["信"] > freq.get("鑫", 0.0)
    assert "”" in freq and "，" in freq and "🙏" in freq
    assert load_default_freq() is freq  # cached
    path = Path(repair.__file__).with_name("data") / "cjk_freq.txt"
    assert path.stat().st_size < 100_000


def test_char_frequencies_skip_mojibake_and_binary() -> None:
    freq = char_frequencies(
        ["中文中", moji("来源信息核心内容"), "\x1f\ufffd\ufffd\ufffd\ufffd乱"]
    )
    assert set(freq) == {"中", "文"}
    assert freq["中"] == pytest.approx(2 / 3)


def test_merge_frequencies_normalises() -> None:
    merged = merge_frequencies({"a": 2.0, "b": 2.0}, {"a": 10.0})
    assert merged == pytest.approx({"a": 0.75, "b": 0.25})


# -------------------------------------------------------- unusable content


def test_visible_text_strips_markup() -> None:
    content = (
        '<div class="x"><img src="https://e.com/a.png" alt="pic" /></div>\n'
        "# Title\n**bold** and [a link](https://e.com) and ![img](x.png) and [[note-id|alias]]\n"
        "<!-- hidden --> see https://example.com/page &amp; more<script>var x = 1;</script>"
    )
    assert visible_text(content) == "Title bold and a link and and alias see & more"


def test_unusable_binary_magic_and_share() -> None:
    assert unusable_reason("\x1f\ufffd\x08\x00" + "abc" * 100) == "binary"
    noisy = "text " * 20 + "\ufffd\x01\x02\x03" * 20
    assert unusable_reason(noisy) == "binary"
    assert (
        unusable_reason("a normal paragraph with one \ufffd replacement char " * 5)
        is None
    )


def test_unusable_html_without_text() -> None:
    html = '<div><img src="https://e.com/a.png"/><br/></div>&nbsp;<p>  </p>'
    assert unusable_reason(html) == "html-without-text"


def test_unusable_too_short() -> None:
    assert unusable_reason("") == "too-short"
    assert (
        unusable_reason(
            "Read more at https://example.com/a-very-long-url-that-is-not-text"
        )
        == "too-short"
    )
    assert unusable_reason("短内容，只有几个字。") == "too-short"
    assert unusable_reason("短内容，只有几个字。", min_chars=5) is None


def test_unusable_accepts_normal_text() -> None:
    text = (
        "<p>2025 has been a strong and eventful year of progress in LLMs. The following is a list"
        " of personally notable and mildly surprising paradigm changes.</p>"
    )
    assert unusable_reason(text) is None


# -------------------------------------------------------------- performance


def test_detection_flags_no_correct_note() -> None:
    texts = [p.read_text("utf-8") for p in sample_notes()]
    assert sum(looks_mojibake(t) for t in texts) == 0  # speed: bench/bench_repair.py


# ------------------------------------------- speed-ups keep the same answers

# Single-byte chars a cp1252/cp1254 decode shows (the stuff of non-CJK runs).
_LATIN = st.sampled_from(list("ÃÂâ€™œ\u009d©®ä¸­æ–‡çè¯ğşıİ°±é…\u0081\u008dð"))


def _runs_decode_alike(damaged: str, freq: dict[str, float] | None = None) -> None:
    """Each run decodes the same with and without the search's pruning."""
    table = repair.table_for(freq or load_default_freq())
    holes = repair._holes_for(damaged)
    for match in repair.RUN_RE.finditer(damaged):
        run = match.group()
        fast = repair._decode_run(run, table, holes)
        assert fast == repair._decode_run(run, table, holes, prune=False), run


@settings(max_examples=150, deadline=None)
@given(
    _mixed(_COMMON + list("，。、：“”（）🙏😂"), _PUNCT),
    st.sampled_from(["cp1252", "cp1254", "all"]),
)
def test_property_pruned_search_matches_full_search(original: str, codec: str) -> None:
    """Skipping dominated edges and options never changes a decoded run."""
    damaged = moji_all_holes(original) if codec == "all" else moji(original, codec)
    _runs_decode_alike(damaged)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_LATIN, st.sampled_from(_COMMON[:300]).map(moji)), max_size=30))
def test_property_pruned_search_matches_full_search_on_noise(pieces: list[str]) -> None:
    """Also on runs that are not clean mojibake (stray Latin letters, lone bytes)."""
    _runs_decode_alike("".join(pieces))


def test_pruned_search_matches_full_search_on_vault_sample() -> None:
    vault = char_frequencies(p.read_text("utf-8") for p in sample_notes())
    merged = merge_frequencies(load_default_freq(), vault)
    for _, text in readable_notes()[:12]:
        for damaged in (moji(text), moji(text, "cp1254"), moji_all_holes(text)):
            _runs_decode_alike(damaged)
            _runs_decode_alike(damaged, merged)


def test_changed_table_is_not_served_from_cache() -> None:
    damaged = moji("原文链接：来源信息，关键观点", "cp1254")  # 原 E5 8E 9F loses 8E
    table = dict(load_default_freq())
    first = fix_mojibake(damaged, table)
    table["城"] = 1.0  # in place: now 城 (E5 9F 8E) beats 原 for the lost byte
    second = fix_mojibake(damaged, table)
    fresh = fix_mojibake(damaged, dict(table))
    assert first is not None and second is not None and fresh is not None
    assert second == fresh
    assert first.text.startswith("原文") and second.text.startswith("城文")


def test_char_frequencies_samples_a_big_vault() -> None:
    rng = random.Random(5)
    common = _COMMON[:800]
    bodies = [
        "".join(rng.choice(common) if rng.random() < 0.5 else " x" for _ in range(1500))
        for _ in range(50)
    ]  # ~3,000 chars each
    notes = [f"---\ntitle: note {i}\n---\n\n{bodies[i % 50]}" for i in range(5000)]
    counted = char_frequencies(iter(notes))  # speed: bench/bench_repair.py
    assert abs(sum(counted.values()) - 1) < 1e-6
    top = sorted(counted, key=lambda c: -counted[c])[:50]
    assert set(top) <= set(common)  # a sample, still the vault's own chars


@pytest.mark.parametrize(
    ("content", "min_chars", "reason"),
    [
        ("<p></p>", 0, "html-without-text"),
        ("<p>hi</p>", 0, None),
        ("<p>hi</p>", 3, "too-short"),
        ("[[a-note|shown text]] and ![img](x.png) https://example.com/long", 10, None),
        ("![only an image](x.png) https://example.com/", 1, "too-short"),
        ("&lt;b&gt; entities are text", 10, None),
    ],
)
def test_unusable_reason_edges(content: str, min_chars: int, reason: str | None) -> None:
    assert unusable_reason(content, min_chars=min_chars) == reason
