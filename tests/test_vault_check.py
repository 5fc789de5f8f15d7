"""Vault index, link resolution, `enrich check` (core and CLI), safe writes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from enrich.check import check_vault
from enrich.cli import cli
from enrich.errors import UnsafePathError
from enrich.fsio import atomic_write
from enrich.links import find_links
from enrich.vault import load_note, roles_for, scan_vault

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "fixtures" / "vault"
runner = CliRunner()


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    """A temp copy of the fixtures vault."""
    dest = tmp_path / "vault"
    shutil.copytree(FIXTURES, dest)
    return dest


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes under folder."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_links_parse_folders_headings_aliases_embeds_and_skip_code() -> None:
    text = "[[a/b|x]] [[c#H]] ![[img.png]] [[d^blk]] `[[code]]`\n```\n[[fenced]]\n```\n"
    got = [(ln.target, ln.heading, ln.alias, ln.embed) for ln in find_links(text)]
    assert got == [("a/b", "", "x", False), ("c", "#H", None, False), ("img.png", "", None, True), ("d", "^blk", None, False)]


def test_resolution_like_obsidian(vault: Path) -> None:
    v = scan_vault(vault)
    assert v.resolve("001-zettelkasten-basics").id == "001-zettelkasten-basics"  # type: ignore[union-attr]
    assert v.resolve("Zettelkasten").id == "001-zettelkasten-basics"  # type: ignore[union-attr]  # alias
    assert v.resolve("inbox/003-no-frontmatter").id == "003-no-frontmatter"  # type: ignore[union-attr]
    assert v.resolve("003-NO-frontmatter.md") is not None
    assert v.resolve("nope") is None
    dangling = {ln.target for vn in v.notes for ln in v.dangling(vn)}
    assert dangling == {"writing-is-thinking", "099-note-that-does-not-exist"}


def test_check_fixture_vault_finds_every_kind(vault: Path) -> None:
    (vault / "latin1.md").write_bytes("---\ntitle: caf\xe9\n---\n".encode("latin-1"))
    (vault / "broken.md").write_text("---\n: : [\n---\nbody\n")
    (vault / "dup.md").write_text("---\nid: 001-zettelkasten-basics\n---\n# Dup\n")
    before = snapshot(vault)
    v = scan_vault(vault)
    report = check_vault(v, roles_for())
    kinds = {(p.path, p.kind) for p in report.problems}
    assert ("latin1.md", "not-utf8") in kinds
    assert ("broken.md", "bad-frontmatter") in kinds
    assert ("dup.md", "duplicate-id") in kinds
    assert ("20260307-rss-hf_blog-001-compressed-body.md", "unusable-content") in kinds
    assert ("20260306-rss-cn_blog-002-biao-qian-yu-ci-biao.md", "mojibake") in kinds
    assert ("001-zettelkasten-basics.md", "dangling-link") in kinds
    assert ("en-001-reading-papers-quickly.md", "placeholder") in kinds
    assert snapshot(vault) == before


def test_check_cli_json_and_exit_codes(vault: Path, tmp_path: Path) -> None:
    res = runner.invoke(cli, ["check", str(vault), "--json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["summary"]["by_kind"]["placeholder"] >= 5
    assert {"path", "kind", "detail"} == set(data["problems"][0])
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "a.md").write_text("# A\n\nSee [[b]].\n")
    (clean / "b.md").write_text("# B\n\nPlain note.\n")
    ok = runner.invoke(cli, ["check", str(clean)])
    assert ok.exit_code == 0, ok.output
    missing = runner.invoke(cli, ["check", str(tmp_path / "missing")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    assert "Traceback" not in missing.output


def test_check_real_vault_sample() -> None:
    if not (SHARED / "vault-sample").is_dir():
        pytest.skip("../shared is absent")
    v = scan_vault(SHARED / "vault-sample")
    report = check_vault(v, roles_for())
    by = report.summary()["by_kind"]
    assert by["unusable-content"] == 2 and by["bad-frontmatter"] == 5 and by["placeholder"] > 10
    assert by["dangling-link"] > 50 and by["not-utf8"] == 0


def test_seed_mojibake_is_repaired_in_memory(tmp_path: Path) -> None:
    seed = SHARED / "seed" / "000_f915968f6288a123.txt"
    if not seed.is_file():
        pytest.skip("../shared is absent")
    vn = load_note(seed, seed.parent, roles_for(), None)
    assert vn.repaired
    assert [s.title for s in vn.note.sections] == ["来源信息", "核心内容", "关键观点", "深度思考", "相关链接"]
    assert [s.role for s in vn.note.sections] == ["source", "content", "key_points", "thoughts", "related"]


def test_atomic_write_refuses_symlink_out_of_vault(tmp_path: Path) -> None:
    root = tmp_path / "v"
    root.mkdir()
    outside = tmp_path / "outside.md"
    outside.write_text("keep")
    (root / "link.md").symlink_to(outside)
    with pytest.raises(UnsafePathError):
        atomic_write(root / "link.md", b"x", root)
    assert outside.read_text() == "keep"
    atomic_write(root / "a.md", b"new", root)
    assert (root / "a.md").read_bytes() == b"new"
    assert not [p for p in os.listdir(root) if p.endswith(".enrich-tmp")]


def test_real_path_matches_realpath_and_notices_a_folder_swapped_for_a_link(tmp_path: Path) -> None:
    from enrich.fsio import ensure_inside, read_bytes, real_path

    root, outside = tmp_path / "v", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.md").write_bytes(b"a")
    (outside / "a.md").write_bytes(b"secret")
    (root / "inner.md").symlink_to(root / "sub" / "a.md")
    (root / "out.md").symlink_to(outside / "a.md")
    (root / "linked").symlink_to(root / "sub")
    for p in (root / "sub" / "a.md", root / "inner.md", root / "out.md", root / "linked" / "a.md", root / "missing.md",
              root / "sub" / ".." / "sub" / "a.md", root / "sub" / "."):
        assert real_path(p) == os.path.realpath(p), p
    assert ensure_inside(root / "sub" / "a.md", root) == (root / "sub" / "a.md").resolve()
    with pytest.raises(UnsafePathError):
        ensure_inside(root / "out.md", root)
    (root / "sub").rename(root / "old")  # the folder, remembered above, is replaced by a link out of the vault
    (root / "sub").symlink_to(outside)
    assert real_path(root / "sub" / "a.md") == os.path.realpath(root / "sub" / "a.md")
    with pytest.raises(UnsafePathError):
        ensure_inside(root / "sub" / "a.md", root)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 10_000)  # more than one read
    (tmp_path / "empty").write_bytes(b"")
    assert read_bytes(big) == big.read_bytes() and read_bytes(tmp_path / "empty") == b""


def test_check_starts_without_the_model_stack() -> None:
    """`enrich check` must start fast: importing the CLI does not import openai, tiktoken or the pipeline."""
    import subprocess
    import sys

    code = "import sys, enrich.cli; print(sorted(m for m in ('openai', 'tiktoken', 'enrich.pipeline') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("text", "targets"),
    [
        ("- ```\n  [[in-list-fence]]\n  ```\n[[after]]", ["after"]),  # a fence opening a list item
        ("a lone ` backtick\n\n[[later]] and `[[coded]]`", ["later"]),  # an unmatched backtick hides nothing
        ("`code\n\nstill` [[outside]]", ["outside"]),  # code spans never cross a blank line
        ("````\n```\n[[inside]]\n````\n[[out]]", ["out"]),  # only a fence as long closes it
        ("~~~\n[[tilde]]\n```\n[[still-in]]\n~~~\n![[pic.png]] [[x#h|y]]", ["pic.png", "x"]),
        ("```\n[[unclosed]]", []),
        ("[[[triple]]] ![[embed]]", ["triple", "embed"]),
    ],
)
def test_find_links_code_rules(text: str, targets: list[str]) -> None:
    assert [ln.target for ln in find_links(text)] == targets


def test_find_links_embed_offsets() -> None:
    text = "see ![[a]] and [[b|B]]"
    first, second = find_links(text)
    assert first.embed and text[first.start : first.end] == "![[a]]"
    assert not second.embed and second.alias == "B" and text[second.start : second.end] == "[[b|B]]"


def _big_vault(dest: Path, copies: int) -> Path:
    """Copies of the fixture notes (and ../shared/vault-sample when present) in sub-folders, with odd files."""
    sources = sorted(FIXTURES.rglob("*.md")) + (sorted((SHARED / "vault-sample").glob("*.md")) if SHARED.is_dir() else [])
    for k in range(copies):
        sub = dest / f"d{k}"
        sub.mkdir(parents=True)
        for src in sources:
            (sub / src.name).write_bytes(src.read_bytes() + f"\n[[{src.stem}]] [[missing-{k}]]\n".encode())
    (dest / "latin1.md").write_bytes("---\ntitle: caf\xe9\n---\n".encode("latin-1"))
    (dest / "broken.md").write_text("---\n: : [\n---\nbody\n")
    return dest


@pytest.mark.parametrize("processes", [2, 3])
def test_parallel_check_gives_the_serial_report(tmp_path: Path, processes: int) -> None:
    from enrich import checkscan
    from enrich.vault import iter_note_files

    if "fork" not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip("no fork on this platform")
    root = _big_vault(tmp_path / "v", 4)
    roles = roles_for()
    serial = check_vault(scan_vault(root, roles), roles).to_json()
    parallel = checkscan.check_files(root, list(iter_note_files(root)), roles, 80, processes).to_json()
    assert parallel == serial
    kinds = serial["summary"]["by_kind"]
    assert kinds["mojibake"] and kinds["dangling-link"] and kinds["duplicate-id"] and kinds["not-utf8"]


def test_shared_id_detail_lists_a_few_others() -> None:
    from enrich.check import duplicate_ids

    rows = [(f"n{i}.md", f"n{i}", "same") for i in range(8)]
    details = {p.path: p.detail for p in duplicate_ids(rows)}
    assert details["n0.md"] == "id 'same' is also used by: n1.md, n2.md, n3.md, n4.md, n5.md and 2 more"
    assert duplicate_ids([("a.md", "a", "x"), ("b.md", "b", "x")])[0].detail == "id 'x' is also used by: b.md"


def test_check_falls_back_to_serial_when_fork_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    from enrich import api, checkscan

    root = _big_vault(tmp_path / "v", 3)
    expected = check_vault(scan_vault(root, roles_for()), roles_for()).to_json()

    def no_fork(*_: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(checkscan, "PARALLEL_MIN_NOTES", 1)
    monkeypatch.setattr(api, "PARALLEL_MIN_NOTES", 1)
    monkeypatch.setattr(api, "workers", lambda: 2)
    monkeypatch.setattr(multiprocessing.get_context("fork"), "Pool", no_fork)
    assert api.check(root).to_json() == expected
