"""Tag vocabulary: normalising, canonical spellings, merge rules, `enrich tags` (core and CLI), undo."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from enrich.cli import cli as enrich_cli
from enrich.errors import ConfigError
from enrich.journal import undo_last
from enrich.tags import (
    TagVocabulary,
    fold_tag,
    load_aliases,
    merge_vault_tags,
    normalise_tag,
)
from enrich.vault import Vault, scan_vault

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
runner = CliRunner()


def app() -> typer.Typer:
    """The real CLI (links, tags and eval are registered on it)."""
    return enrich_cli


def write(folder: Path, name: str, text: str) -> Path:
    """Write one note."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture
def vault_dir(tmp_path: Path) -> Path:
    """A vault with case, separator and plural variants in inline, block and JSON frontmatter."""
    write(tmp_path, "a.md", '---\ntitle: A\ntags: ["AI", "agents", "ai_research"]\n---\n\n# A\n\nbody\n')
    write(tmp_path, "b.md", "---\ntitle: B\ntags:\n  - ai\n  - agent\n  - ai-research\n---\n\n# B\n\nbody\n")
    write(tmp_path, "c.md", '---\ntitle: C\ntags: [ai, agent, "ai-research", writing]\n---\n\n# C\n\nbody\n')
    write(tmp_path, "d.md", '---\n{\n  "title": "D",\n  "tags": [\n    "Writing",\n    "ai"\n  ]\n}\n---\n\n# D\n')
    write(tmp_path, "e.md", "---\ntitle: E\ntags: ai, agents\n---\n\n# E\n")
    return tmp_path


def test_normalise_and_fold() -> None:
    assert normalise_tag("#AI_Research") == "ai-research"
    assert normalise_tag(" Machine Learning ") == "machine-learning"
    assert normalise_tag("a/b.c__d") == "a-b-c-d"
    assert fold_tag("Agents") == fold_tag("agent") == "agent"
    assert fold_tag("libraries") == "library"
    assert fold_tag("news") == "news" and fold_tag("analysis") == "analysis" and fold_tag("class") == "class"
    assert fold_tag("LLMs") == "llm"
    assert fold_tag("笔记") == "笔记"


def test_vocabulary_canonical_top_and_groups(vault_dir: Path) -> None:
    vocab = TagVocabulary(scan_vault(vault_dir))
    assert vocab.canonical("AI") == "ai"
    assert vocab.canonical("Agents") == "agent"
    assert vocab.canonical("ai research") == "ai-research"
    assert vocab.canonical("unknown") is None
    assert vocab.top(3) == ["ai", "agent", "ai-research"]
    groups = {g.canonical: g.spellings for g in vocab.near_duplicates()}
    assert groups["ai"] == {"AI": 1, "ai": 4}
    assert groups["agent"] == {"agent": 2, "agents": 2}  # tie: a slug, then alphabetical order
    assert groups["writing"] == {"Writing": 1, "writing": 1}


def test_top_offers_only_slugs(tmp_path: Path) -> None:
    write(tmp_path, "a.md", '---\ntags: ["AI_Research", "dd:2026-03-05", "rss"]\n---\n')
    assert TagVocabulary(scan_vault(tmp_path)).top() == ["ai-research", "rss"]


def test_merge_keeps_existing_maps_proposals_and_limits_new(vault_dir: Path) -> None:
    vocab = TagVocabulary(scan_vault(vault_dir))
    final, new = vocab.merge(["Custom", "ai"], ["AI", "Agents", "AI_Research", "brand-new", "other", "third"], 2)
    assert final == ["Custom", "ai", "agent", "ai-research", "brand-new", "other"]
    assert new == ["brand-new", "other"]
    assert vocab.merge([], ["Not A Slug!!"], 2) == ([], [])
    assert vocab.merge([], ["new-tag", "new_tag", "new-tags"], 2) == (["new-tag"], ["new-tag"])
    assert vocab.merge(["x"], [], 0) == (["x"], [])


def test_aliases_map_variants(tmp_path: Path) -> None:
    write(tmp_path, "a.md", '---\ntags: ["ml", "ml", "machine-learning"]\n---\n')
    vault = scan_vault(tmp_path)
    vocab = TagVocabulary(vault, {"machine learning": "ml"})
    assert vocab.canonical("Machine_Learning") == "ml"
    assert vocab.merge([], ["machine-learning", "ml"]) == (["ml"], [])
    write(tmp_path, ".enrich/tags.toml", '[aliases]\n"LLMs" = "large-language-model"\n')
    loaded = TagVocabulary.load(vault)
    assert loaded.canonical("llm") == "large-language-model"


def test_bad_aliases_file_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path, ".enrich/tags.toml", "[aliases\n")
    with pytest.raises(ConfigError):
        load_aliases(tmp_path)


def test_merge_vault_rewrites_in_file_style_records_aliases_and_undo(vault_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in vault_dir.glob("*.md")}
    vault = scan_vault(vault_dir)
    report = merge_vault_tags(vault, TagVocabulary(vault))
    assert sorted(report.changed) == ["a.md", "d.md"]
    assert report.skipped == [("e.md", "frontmatter tags is not a list")]
    assert (vault_dir / "a.md").read_text().startswith('---\ntitle: A\ntags: ["ai", "agent", "ai-research"]\n---')
    assert '"tags": [\n    "writing",\n    "ai"\n  ]' in (vault_dir / "d.md").read_text()
    assert (vault_dir / "b.md").read_bytes() == before["b.md"]  # already canonical: untouched
    aliases = tomllib.loads((vault_dir / ".enrich" / "tags.toml").read_text())["aliases"]
    assert aliases == {"AI": "ai", "agents": "agent", "ai_research": "ai-research", "Writing": "writing"}
    assert TagVocabulary.load(scan_vault(vault_dir)).canonical("AI") == "ai"
    undo_last(vault_dir)
    assert {p.name: p.read_bytes() for p in vault_dir.glob("*.md")} == before
    assert not (vault_dir / ".enrich" / "tags.toml").exists()


def test_merge_dry_run_writes_nothing(vault_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in vault_dir.glob("*.md")}
    vault = scan_vault(vault_dir)
    report = merge_vault_tags(vault, TagVocabulary(vault), dry_run=True)
    assert sorted(report.changed) == ["a.md", "d.md"]
    assert {p.name: p.read_bytes() for p in vault_dir.glob("*.md")} == before
    assert not (vault_dir / ".enrich").exists()


def test_cli_tags_lists_merges_and_exit_codes(vault_dir: Path) -> None:
    res = runner.invoke(app(), ["tags", str(vault_dir), "--json"])
    assert res.exit_code == 1, res.output
    data = json.loads(res.stdout)
    assert {g["canonical"] for g in data["groups"]} == {"ai", "agent", "ai-research", "writing"}
    res = runner.invoke(app(), ["tags", str(vault_dir), "--merge", "--dry-run"])
    assert res.exit_code == 1 and "would rewrite tags in 2 note(s)" in res.output
    res = runner.invoke(app(), ["tags", str(vault_dir), "--merge"])
    assert res.exit_code == 1  # e.md's comma-string tags were left alone
    (vault_dir / "e.md").write_text('---\ntitle: E\ntags: [ai]\n---\n')
    res = runner.invoke(app(), ["tags", str(vault_dir)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app(), ["tags", str(vault_dir / "nope")])
    assert res.exit_code == 2 and "error:" in res.output


@pytest.mark.skipif(not (SHARED / "vault-sample").is_dir(), reason="shared sample vault not present")
def test_sample_vault_vocabulary() -> None:
    vault: Vault = scan_vault(SHARED / "vault-sample")
    vocab = TagVocabulary(vault)
    assert "ai-research" in vocab.top(10)
    assert vocab.canonical("AI-Research") == "ai_research"
    final, new = vocab.merge(["rss"], ["ai-research", "LLMs", "writing", "vibe-coding"], 2)
    assert final == ["rss", "ai_research", "llm", "writing", "vibe-coding"] and new == ["vibe-coding"]


def test_copied_example_tags_are_found_unless_the_vault_or_the_note_is_about_them(tmp_path: Path) -> None:
    write(tmp_path, "a.md", "---\ntags: [attention, zettelkasten]\n---\n# A\n")
    vocab = TagVocabulary.load(scan_vault(tmp_path))
    examples = ("note-taking", "zettelkasten")
    proposed = ["attention", "Note-Taking", "zettelkasten"]
    assert vocab.copied_examples(proposed, examples, "Attention is a budget.") == ["Note-Taking"]
    assert vocab.copied_examples(proposed, examples, "On note taking, in short.") == []
    assert vocab.copied_examples(proposed, (), "Attention is a budget.") == []
    empty = TagVocabulary.load(scan_vault(write(tmp_path / "b", "b.md", "# B\n").parent))
    assert empty.copied_examples(proposed, examples, "Attention.") == ["Note-Taking", "zettelkasten"]
    empty.learn(["zettelkasten"])  # created earlier in the same run: still only an echo of the example
    assert empty.copied_examples(proposed, examples, "Attention.") == ["Note-Taking", "zettelkasten"]
