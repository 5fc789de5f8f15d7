"""Interrupting `python -m enrich run` (SIGINT, SIGKILL) never leaves a half-written note; a rerun finishes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fakeserver import FakeOpenAI
from fakeserver_limits import write_vault

from enrich.plan import edited_sections, provenance
from enrich.roles import KEY_POINTS, RELATED, default_roles
from enrich.vault import scan_vault

ROOT = Path(__file__).resolve().parents[1]
NOTES = 40


def start_run(srv: FakeOpenAI, vault: Path, *extra: str, build_ahead: str = "auto") -> subprocess.Popen[str]:
    """Start `python -m enrich run` on the vault as a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ENRICH_"))}
    env["ENRICH_BUILD_AHEAD"] = build_ahead
    cmd = [sys.executable, "-m", "enrich", "run", str(vault), "--base-url", srv.url, "--model", "fake-model", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_chats(srv: FakeOpenAI, n: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Wait until the server has received n chat requests."""
    end = time.monotonic() + timeout
    while len(srv.chats) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the run never got going"
        time.sleep(0.02)


def classify(vault: Path, originals: dict[str, bytes]) -> tuple[int, int]:
    """Check every note is untouched or fully enriched; return (untouched, enriched)."""
    roles = default_roles()
    scanned = scan_vault(vault, roles)
    assert not scanned.errors
    assert {vn.rel for vn in scanned.notes} == set(originals)
    untouched = enriched = 0
    for vn in scanned.notes:
        if vn.raw == originals[vn.rel]:
            untouched += 1
            continue
        prov = provenance(vn)
        assert prov is not None and prov["model"] == "fake-model", vn.rel
        assert not edited_sections(vn, prov), vn.rel  # managed sections are exactly what was recorded
        for role in (KEY_POINTS, RELATED):
            sec = vn.note.section(role)
            assert sec is not None and not roles.is_placeholder(vn.note.body(sec)), (vn.rel, role)
        assert "My own thoughts about note" in vn.note.text
        enriched += 1
    return untouched, enriched


def cached_results(vault: Path) -> int:
    """Rows in the vault's result cache."""
    db = sqlite3.connect(vault / ".enrich" / "cache.sqlite")
    try:
        return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    finally:
        db.close()


def finish(srv: FakeOpenAI, vault: Path, originals: dict[str, bytes], written: int) -> None:
    """Run again without latency: everything gets done, cached results are not asked for again."""
    srv.latency = 0.0
    reusable = cached_results(vault) - written  # validated before the interruption, never written
    before = len(srv.chats)
    proc = start_run(srv, vault, "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["enriched"] == NOTES - written and report["failed"] == 0
    # Every result validated before the interruption is reused (related ids the note's current
    # candidates no longer offer are dropped); every other note costs exactly one call.
    assert report["cached"] == reusable
    assert len(srv.chats) - before == NOTES - written - report["cached"]
    assert classify(vault, originals) == (0, NOTES)


@pytest.fixture
def slow_server(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """The fake server with 0.3 s per answer."""
    fake_openai.latency = 0.3
    return fake_openai


def no_process_left(vault: Path, timeout: float = 10) -> bool:
    """True once no process (the run, or a child building its requests) works on this vault any more."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        running = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                running.append(str(vault) in cmdline.read_bytes().decode(errors="replace"))
            except OSError:
                continue
        if not any(running):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("build_ahead", ["off", "on"])
def test_sigint_cancels_cleanly_and_a_rerun_finishes(tmp_path: Path, slow_server: FakeOpenAI, build_ahead: str) -> None:
    vault = tmp_path / "vault"
    originals = write_vault(vault, NOTES)
    proc = start_run(slow_server, vault, "-j", "4", build_ahead=build_ahead)
    wait_for_chats(slow_server, 14, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    line = next(ln for ln in err.splitlines() if ln.startswith("interrupted:"))
    untouched, enriched = classify(vault, originals)
    assert line == f"interrupted: {enriched} notes written, {untouched} left; run again to continue"
    assert 0 < enriched < NOTES
    assert cached_results(vault) >= enriched  # validated results are kept; finish() checks they are reused
    assert not list(vault.glob(".*.enrich-tmp"))
    assert no_process_left(vault)
    finish(slow_server, vault, originals, enriched)


def test_sigterm_is_handled_like_sigint(tmp_path: Path, slow_server: FakeOpenAI) -> None:
    vault = tmp_path / "vault"
    originals = write_vault(vault, NOTES)
    proc = start_run(slow_server, vault, "-j", "4")
    wait_for_chats(slow_server, 6, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "run again to continue" in err
    classify(vault, originals)


@pytest.mark.parametrize("build_ahead", ["off", "on"])
def test_sigkill_leaves_whole_notes_and_a_rerun_reuses_the_cache(
    tmp_path: Path, slow_server: FakeOpenAI, build_ahead: str
) -> None:
    vault = tmp_path / "vault"
    originals = write_vault(vault, NOTES)
    proc = start_run(slow_server, vault, "-j", "8", build_ahead=build_ahead)
    wait_for_chats(slow_server, 20, proc)
    time.sleep(0.17)  # land somewhere inside a wave of answers being validated and written
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert no_process_left(vault)  # a child building requests ends with its parent
    untouched, enriched = classify(vault, originals)
    assert 0 < enriched < NOTES
    finish(slow_server, vault, originals, enriched)


def test_a_cached_result_survives_other_notes_being_enriched(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """What an interrupted run validated but never wrote is reused, though candidates and tags moved on."""
    from typer.testing import CliRunner

    from enrich.cli import cli

    vault = tmp_path / "vault"
    originals = write_vault(vault, 12)
    args = ["--base-url", fake_openai.url, "--model", "fake-model", "--json"]
    runner = CliRunner(env={"OPENAI_API_KEY": None, "ENRICH_MODEL": None, "ENRICH_BASE_URL": None})
    one = str(vault / "gen-00003.md")
    assert runner.invoke(cli, ["run", one, "--dry-run", *args]).exit_code == 0  # validated and cached, not written
    others = [str(vault / name) for name in sorted(originals) if name != "gen-00003.md"]
    assert runner.invoke(cli, ["run", *others, *args]).exit_code == 0  # the vault around it changes
    calls = len(fake_openai.chats)
    res = runner.invoke(cli, ["run", one, *args])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["cached"] == 1 and len(fake_openai.chats) == calls
    assert classify(vault, originals) == (0, 12)


def test_a_write_under_way_when_interrupted_is_finished_and_counted(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a note is being written: that note is written whole and reported written."""
    from typer.testing import CliRunner

    import enrich.writer as writer
    from enrich.cli import cli

    vault = tmp_path / "vault"
    originals = write_vault(vault, 6)
    real_write = writer.write_real
    interrupted: list[Path] = []

    def write_then_slow(path: Path, data: bytes, **kw: Any) -> None:
        if not interrupted:
            interrupted.append(path)
            os.kill(os.getpid(), signal.SIGINT)  # the run's handler asks the event loop to stop
            time.sleep(0.3)  # the loop cancels every task meanwhile
        real_write(path, data, **kw)

    monkeypatch.setattr(writer, "write_real", write_then_slow)
    runner = CliRunner(env={"OPENAI_API_KEY": None, "ENRICH_MODEL": None, "ENRICH_BASE_URL": None})
    res = runner.invoke(cli, ["run", str(vault), "--base-url", fake_openai.url, "--model", "fake-model", "-j", "1"])
    assert res.exit_code == 130, res.output
    untouched, enriched = classify(vault, originals)
    assert enriched >= 1 and interrupted[0].read_bytes() != originals[interrupted[0].name]
    assert f"interrupted: {enriched} notes written, {untouched} left" in res.stderr


def test_notes_written_in_one_loop_turn_share_their_journal_and_folder_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight notes finished together: their originals are durable before the first replace, in a fixed number
    of fsyncs (originals, manifest, journal folders), then one fsync per note and one for the notes' folder."""
    import asyncio

    from enrich.journal import undo_last
    from enrich.writer import NoteWriter

    vault = tmp_path / "vault"
    originals = write_vault(vault, 8)
    notes = scan_vault(vault, default_roles()).notes
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(f"replace {dst}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)

    async def write_all() -> None:
        writer = NoteWriter(vault)
        try:
            await asyncio.gather(*(writer.write(vn, vn.raw + b"\nenriched\n") for vn in notes))
        finally:
            writer.close()

    asyncio.run(write_all())
    first_replace = next(i for i, e in enumerate(events) if e.startswith("replace"))
    before = events[:first_replace]
    assert any(e.endswith(".origs") for e in before) and any(e.endswith("manifest.jsonl") for e in before)
    run_dir = next((vault / ".enrich" / "journal").iterdir())
    for folder in (run_dir, run_dir.parent, run_dir.parent.parent, vault):  # new names and new folders are durable
        assert f"fsync {folder.resolve()}" in before
    assert len([e for e in events if e.startswith("fsync")]) == 8 + 2 + 4 + 1
    assert all((vault / name).read_bytes() == data + b"\nenriched\n" for name, data in originals.items())
    undo_last(vault)
    assert all((vault / name).read_bytes() == data for name, data in originals.items())


def test_later_batches_append_to_the_open_journal_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's journal keeps its originals and manifest files open: a later batch costs two fsyncs and no folder
    fsync (no new name), and undo still restores every note."""
    import asyncio

    from enrich.journal import read_manifest, undo_last
    from enrich.writer import NoteWriter

    vault = tmp_path / "vault"
    originals = write_vault(vault, 6)
    notes = scan_vault(vault, default_roles()).notes
    fsyncs: list[str] = []
    real_fsync = os.fsync

    async def write_batches() -> None:
        writer = NoteWriter(vault)
        try:
            await asyncio.gather(*(writer.write(vn, vn.raw + b"\none\n") for vn in notes[:3]))
            monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
            await asyncio.gather(*(writer.write(vn, vn.raw + b"\ntwo\n") for vn in notes[3:]))
        finally:
            writer.close()

    asyncio.run(write_batches())
    run_dir = next((vault / ".enrich" / "journal").iterdir())
    assert [Path(f).name for f in fsyncs[:2]] == ["00001.origs", "manifest.jsonl"]  # appended, not new files
    assert len(fsyncs) == 2 + 3 + 1 and str(run_dir.resolve()) not in fsyncs  # then each note and the vault folder
    assert sorted(p.name for p in run_dir.iterdir()) == ["00001.origs", "manifest.jsonl"]
    assert len(read_manifest(run_dir)) == 6
    undo_last(vault)
    assert all((vault / name).read_bytes() == data for name, data in originals.items())


def test_a_batch_whose_originals_cannot_be_saved_is_not_written_and_later_batches_undo_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The originals file fills up mid-run (half a batch written): that batch fails untouched; the next batch's
    originals go to a new file, so undo restores exactly what each note held."""
    import asyncio
    import builtins

    from enrich import journal as journal_module
    from enrich.errors import NoteError
    from enrich.journal import read_manifest, undo_last
    from enrich.writer import NoteWriter

    vault = tmp_path / "vault"
    originals = write_vault(vault, 6)
    notes = scan_vault(vault, default_roles()).notes
    fail = {"on": False}

    class FillsUp:
        """A file whose next write, once armed, writes half its bytes and fails (a full disk)."""

        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def write(self, data: bytes) -> int:
            if fail["on"]:
                fail["on"] = False
                self.fh.write(data[: len(data) // 2])
                self.fh.flush()
                raise OSError(28, "No space left on device")
            return int(self.fh.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

    def opener(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = builtins.open(file, mode, *args, **kwargs)
        return FillsUp(fh) if str(file).endswith(".origs") else fh

    monkeypatch.setattr(journal_module, "open", opener, raising=False)

    async def batches() -> list[BaseException | None]:
        writer = NoteWriter(vault)
        try:
            await asyncio.gather(*(writer.write(vn, vn.raw + b"\none\n") for vn in notes[:2]))
            fail["on"] = True
            failed = await asyncio.gather(*(writer.write(vn, vn.raw + b"\ntwo\n") for vn in notes[2:4]),
                                          return_exceptions=True)
            await asyncio.gather(*(writer.write(vn, vn.raw + b"\nthree\n") for vn in notes[4:]))
            return failed
        finally:
            writer.close()

    failed = asyncio.run(batches())
    assert all(isinstance(e, NoteError) for e in failed)
    assert all((vault / vn.rel).read_bytes() == originals[vn.rel] for vn in notes[2:4])  # left untouched
    run_dir = next((vault / ".enrich" / "journal").iterdir())
    assert sorted(e["path"] for e in read_manifest(run_dir)) == sorted(vn.rel for vn in notes[:2] + notes[4:])
    undo_last(vault)
    assert all((vault / name).read_bytes() == data for name, data in originals.items())


def test_a_batch_with_a_note_linked_out_of_the_vault_writes_the_others_and_journals_only_them(tmp_path: Path) -> None:
    """A note whose file became a symlink out of the vault fails before the journal; the batch's others are
    written with their permissions kept, and undo restores exactly them."""
    import asyncio

    from enrich.errors import UnsafePathError
    from enrich.journal import read_manifest, undo_last
    from enrich.writer import NoteWriter

    vault = tmp_path / "vault"
    originals = write_vault(vault, 3)
    notes = scan_vault(vault, default_roles()).notes
    outside = tmp_path / "outside.md"
    outside.write_bytes(notes[0].raw)
    notes[0].path.unlink()
    notes[0].path.symlink_to(outside)
    notes[1].path.chmod(0o640)

    async def write_all() -> list[BaseException | None]:
        writer = NoteWriter(vault)
        try:
            return await asyncio.gather(*(writer.write(vn, vn.raw + b"\nnew\n") for vn in notes), return_exceptions=True)
        finally:
            writer.close()

    results = asyncio.run(write_all())
    assert isinstance(results[0], UnsafePathError) and results[1:] == [None, None]
    assert outside.read_bytes() == originals[notes[0].path.name]
    assert notes[1].path.stat().st_mode & 0o777 == 0o640
    run_dir = next((vault / ".enrich" / "journal").iterdir())
    assert sorted(e["path"] for e in read_manifest(run_dir)) == sorted(vn.rel for vn in notes[1:])
    assert not [p for p in os.listdir(vault) if p.endswith(".enrich-tmp")]
    undo_last(vault)
    assert all(vn.path.read_bytes() == originals[vn.path.name] for vn in notes[1:])


def test_undo_reads_batched_originals_and_older_single_file_journals(tmp_path: Path) -> None:
    """Originals of one batch share a file (offset, length); journals written before that keep one file each."""
    from enrich.journal import Journal, original_bytes, read_manifest, undo_last

    vault = tmp_path / "vault"
    vault.mkdir()
    a, b = vault / "a.md", vault / "b.md"
    a.write_bytes(b"alpha\n")
    b.write_bytes(b"beta, longer\n")
    journal = Journal(vault, "run")
    journal.record_many([(a, b"alpha\n", b"A\n"), (b, b"beta, longer\n", b"B\n")])
    entries = read_manifest(journal.dir)
    assert [original_bytes(journal.dir, e) for e in entries] == [b"alpha\n", b"beta, longer\n"]
    assert entries[0]["orig"] == entries[1]["orig"] and entries[1]["at"] == [6, 13]
    a.write_bytes(b"A\n")
    b.write_bytes(b"B\n")
    undo_last(vault)
    assert (a.read_bytes(), b.read_bytes()) == (b"alpha\n", b"beta, longer\n")
    (tmp_path / "old.orig").write_bytes(b"old bytes")
    assert original_bytes(tmp_path, {"orig": "old.orig"}) == b"old bytes"


def test_undo_with_a_damaged_journal_skips_those_files_with_a_reason(tmp_path: Path) -> None:
    """A missing or truncated originals file, or an entry pointing outside the vault: reported, nothing else touched."""
    import json

    from enrich.journal import Journal, undo_last

    vault = tmp_path / "vault"
    vault.mkdir()
    a, b, c = vault / "a.md", vault / "b.md", vault / "c.md"
    for path in (a, b, c):
        path.write_bytes(b"original " + path.name.encode() + b"\n")
    journal = Journal(vault, "run")
    journal.record_many([(a, a.read_bytes(), b"A\n"), (b, b.read_bytes(), b"B\n")])
    journal.record_many([(c, c.read_bytes(), b"C\n")])
    outside = tmp_path / "outside.md"
    outside.write_bytes(b"C\n")
    with (journal.dir / "manifest.jsonl").open("a", encoding="utf-8") as fh:
        fh.write("[1, 2]\n")  # valid JSON, not an entry: ignored
        fh.write(json.dumps({"path": "../outside.md", "orig": None, "written": journal.entries[2]["written"]}) + "\n")
    for path, data in ((a, b"A\n"), (b, b"B\n"), (c, b"C\n")):
        path.write_bytes(data)
    first, second = sorted(journal.dir.glob("*.origs"))
    first.write_bytes(first.read_bytes()[:5])  # truncated: a's and b's originals are damaged
    second.unlink()
    report = undo_last(vault)
    reasons = dict(report.skipped)
    assert set(reasons) == {"a.md", "b.md", "c.md", "../outside.md"} and not report.restored and not report.removed
    assert "shorter than the journal says" in reasons["b.md"] and "No such file" in reasons["c.md"]
    assert "outside the vault" in reasons["../outside.md"] and outside.read_bytes() == b"C\n"
    assert (a.read_bytes(), b.read_bytes(), c.read_bytes()) == (b"A\n", b"B\n", b"C\n")


def test_an_unreadable_cache_is_moved_aside_and_a_failing_one_turns_off(tmp_path: Path) -> None:
    """The cache only holds results that can be asked for again: it never stops a run."""
    from enrich.cache import Cache

    path = tmp_path / ".enrich" / "cache.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"not a database at all")
    warnings: list[str] = []
    cache = Cache(path, warnings.append)
    cache.put("k", {"a": 1}, "m", 1, 2)
    assert cache.get("k") == ({"a": 1}, 1, 2)
    broken = list(path.parent.glob("cache.sqlite.broken-*"))
    assert len(broken) == 1 and broken[0].read_bytes() == b"not a database at all"
    assert "moved it to" in warnings[0]
    assert cache._db is not None
    cache._db.close()  # any database error from now on
    assert cache.get("k") is None and "is off for this run" in warnings[-1]
    cache.put("k2", {}, "m", 0, 0)  # a no-op now, no exception
    cache.close()
    assert len(warnings) == 2
