"""Dangling-link repair: matching (exact, fuzzy, numbered prefix, ambiguity), rewriting, undo, `enrich links`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from enrich.cli import cli as enrich_cli
from enrich.journal import undo_last
from enrich.linkfix import LinkMatcher, fix_links, match_key, rewrite
from enrich.links import find_links
from enrich.vault import scan_vault

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
runner = CliRunner()


def app() -> typer.Typer:
    """The real CLI (links, tags and eval are registered on it)."""
    return enrich_cli


def write(folder: Path, name: str, text: str | bytes) -> Path:
    """Write one file."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


SOURCE = """---
title: Source
---

# Source

See [[Falcon Perception]], [[falcon perception#Results|the results]] and ![[Falcon Perception#Intro]].
Also [[archive/Falcon Perception]] and [[004-链接的力量]] and [[Nothing Like This At All]].
Inline `[[Falcon Perception]]` stays, and so does the fence:

```
[[Falcon Perception]]
```

- [[Sleep Tracker]]
"""


@pytest.fixture
def vault_dir(tmp_path: Path) -> Path:
    """A vault whose source note has dangling links of every shape."""
    write(tmp_path, "notes/20260406-rss-hf-falcon-perception.md", "---\ntitle: Falcon Perception\n---\n\n# Falcon Perception\n")
    write(tmp_path, "004-链接原则.md", "---\ntitle: 链接原则\n---\n\n# 链接原则\n")
    write(tmp_path, "005-文献笔记.md", "# 文献笔记\n")
    write(tmp_path, "a/sleep-tracker.md", "---\ntitle: Sleep Tracker\n---\n")
    write(tmp_path, "b/sleep-tracker.md", "---\ntitle: Sleep Tracker\n---\n")
    write(tmp_path, "source.md", SOURCE)
    return tmp_path


def test_match_key_folds_case_punctuation_folder_extension() -> None:
    assert match_key("archive/Falcon Perception.md") == "falconperception"
    assert match_key("004-链接的力量") == "004链接的力量"


def test_matcher_exact_fuzzy_prefix_and_ambiguity(vault_dir: Path) -> None:
    m = LinkMatcher(scan_vault(vault_dir))
    hit, _ = m.match("falcon perception")
    assert hit is not None and hit.id == "20260406-rss-hf-falcon-perception" and hit.reason == "title"
    hit, _ = m.match("Falcon Perceptoin")
    assert hit is not None and hit.reason == "similar"
    hit, _ = m.match("004-链接的力量")
    assert hit is not None and hit.id == "004-链接原则" and hit.reason == "numbered-prefix"
    assert m.match("005-链接原则")[0] is None  # the number names another note: not confident
    assert m.match("Sleep Tracker")[1].startswith("ambiguous")
    assert m.match("Nothing Like This At All") == (None, "no close match")
    assert m.match("abc")[0] is None


def test_rewrite_keeps_heading_embed_and_alias() -> None:
    a, b, c = find_links("[[Foo#H|shown]] ![[Foo#Intro]] [[dir/Foo^blk]]")
    assert rewrite(a, "id") == "[[id#H|shown]]"
    assert rewrite(b, "id") == "![[id#Intro]]"
    assert rewrite(c, "id") == "[[id^blk|dir/Foo]]"


def test_fix_rewrites_confident_links_only_and_undo_restores(vault_dir: Path) -> None:
    before = (vault_dir / "source.md").read_bytes()
    report = fix_links(scan_vault(vault_dir))
    text = (vault_dir / "source.md").read_text(encoding="utf-8")
    fid = "20260406-rss-hf-falcon-perception"
    assert f"See [[{fid}|Falcon Perception]], [[{fid}#Results|the results]] and ![[{fid}#Intro]]." in text
    assert f"Also [[{fid}|archive/Falcon Perception]] and [[004-链接原则|004-链接的力量]] and [[Nothing Like" in text
    assert "Inline `[[Falcon Perception]]` stays" in text and "```\n[[Falcon Perception]]\n```" in text
    assert "- [[Sleep Tracker]]" in text
    assert report.changed == ["source.md"]
    assert sorted(d.link.target for d in report.remaining) == ["Nothing Like This At All", "Sleep Tracker"]
    after = scan_vault(vault_dir)
    assert len(after.dangling(after.get("source"))) == 2  # type: ignore[arg-type]
    undo_last(vault_dir)
    assert (vault_dir / "source.md").read_bytes() == before


def test_dry_run_writes_nothing(vault_dir: Path) -> None:
    before = (vault_dir / "source.md").read_bytes()
    report = fix_links(scan_vault(vault_dir), dry_run=True)
    assert report.changed == ["source.md"] and all(d.fixed for d in report.links if d.new_text)
    assert (vault_dir / "source.md").read_bytes() == before
    assert not (vault_dir / ".enrich").exists()


def test_bom_and_crlf_are_kept(tmp_path: Path) -> None:
    write(tmp_path, "target-note.md", "---\ntitle: Target Note\n---\n")
    write(tmp_path, "s.md", b"\xef\xbb\xbf# S\r\n\r\nsee [[Target Note]]\r\n")
    fix_links(scan_vault(tmp_path))
    assert (tmp_path / "s.md").read_bytes() == b"\xef\xbb\xbf# S\r\n\r\nsee [[target-note|Target Note]]\r\n"


def test_no_dangling_links_exit_zero_and_json(tmp_path: Path) -> None:
    write(tmp_path, "a.md", "# A\n\n[[b]]\n")
    write(tmp_path, "b.md", "# B\n")
    res = runner.invoke(app(), ["links", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["dangling"] == 0


def test_cli_links_report_fix_and_exit_codes(vault_dir: Path) -> None:
    res = runner.invoke(app(), ["links", str(vault_dir), "--json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["dangling"] == 7 and data["fixable"] == 5 and data["fixed"] == 0
    res = runner.invoke(app(), ["links", str(vault_dir), "--fix", "--dry-run"])
    assert res.exit_code == 1 and "-> [[004-链接原则|004-链接的力量]]" in res.output
    res = runner.invoke(app(), ["links", str(vault_dir), "--fix"])
    assert res.exit_code == 1 and "fixed 5; 2 remain" in res.output
    (vault_dir / "source.md").write_text("# only good links now\n", encoding="utf-8")
    assert runner.invoke(app(), ["links", str(vault_dir), "--fix"]).exit_code == 0
    res = runner.invoke(app(), ["links", str(vault_dir / "source.md")])
    assert res.exit_code == 2 and "not a file" in res.output


@pytest.mark.skipif(not (SHARED / "vault-sample").is_dir(), reason="shared sample vault not present")
def test_sample_vault_fix(tmp_path: Path) -> None:
    dest = tmp_path / "v"
    shutil.copytree(SHARED / "vault-sample", dest)
    report = fix_links(scan_vault(dest), dry_run=True)
    fixes = {d.text: d.new_text for d in report.links if d.new_text}
    assert fixes["[[004-链接的力量]]"] == "[[004-链接原则|004-链接的力量]]"
    assert fixes["[[Falcon Perception]]"].startswith("[[20260406-rss-huggingface_blog-")
    assert "[[016-llm-research-automation流水线]]" not in fixes
    assert len(report.remaining) > 0
