"""`enrich run` with the bundled local model (the [local] extra) on real fixture notes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from enrich.cli import cli
from enrich.notes import parse_note
from enrich.providers import local_available
from enrich.vault import scan_vault

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vault"
NOTES = ["en-001-reading-papers-quickly.md", "20260301-rss-example_blog-001-small-notes-compound.md"]

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(not local_available(), reason="the [local] extra is not installed"),
]


def test_local_model_enriches_notes_and_leaves_user_sections_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "ENRICH_BASE_URL", "ENRICH_PROVIDER", "ENRICH_MODEL"):
        monkeypatch.delenv(name, raising=False)
    vault = tmp_path / "vault"
    shutil.copytree(FIXTURES, vault)
    before = {n: parse_note((vault / n).read_bytes()) for n in NOTES}
    res = CliRunner().invoke(cli, ["run", *[str(vault / n) for n in NOTES], "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["enriched"] == len(NOTES) and report["failed"] == 0
    assert "bundled" in report["provider"]
    v = scan_vault(vault)
    for name in NOTES:
        after = parse_note((vault / name).read_bytes())
        old = before[name]
        for role in ("thoughts", "content", "source"):
            a, b = after.section(role), old.section(role)
            assert a is not None and b is not None
            assert after.text[a.start : a.end] == old.text[b.start : b.end]
        points = [ln for ln in after.body(after.section("key_points")).splitlines() if ln.startswith("- ")]
        assert 3 <= len(points) <= 5
        assert after.meta["enriched"]["model"].startswith("SmolLM2")
        for link in after.body(after.section("related")).split("[[")[1:]:
            assert v.resolve(link.split("]]")[0]) is not None
