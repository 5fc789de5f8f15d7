"""Requests built ahead in a forked child: the same requests as built in the loop, and every failure falls back."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from fakeserver import FakeOpenAI
from fakeserver_limits import write_vault

from enrich import api, buildahead
from enrich.errors import EnrichError
from enrich.pipeline import Pipeline, RunOptions, run_sync

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="building ahead needs fork")
NOTES = 24


def run(vault: Path, server: FakeOpenAI, mode: str) -> tuple[Any, list[Any]]:
    """Run on the vault with build_ahead=mode; return the report and what each get() returned (None: built in the loop)."""
    vault_, settings, roles, notes = api._open_for_run([vault], {"base_url": server.url, "model": "fake-model", "build_ahead": mode})
    model, factory, _ = api.model_for(settings)
    pipe = Pipeline(vault_, settings, roles, factory, model, RunOptions())
    return run_sync(pipe, notes), pipe_gets


pipe_gets: list[Any] = []


@pytest.fixture(autouse=True)
def record_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe_gets.clear()
    real = buildahead.BuildAhead.get

    async def get(self: buildahead.BuildAhead, i: int) -> Any:
        item = await real(self, i)
        pipe_gets.append(item)
        return item

    monkeypatch.setattr(buildahead.BuildAhead, "get", get)


def test_requests_built_ahead_are_the_ones_the_loop_builds(tmp_path: Path) -> None:
    sent = {}
    for mode in ("off", "on"):
        write_vault(tmp_path / mode, NOTES)
        with FakeOpenAI() as server:
            report, gets = run(tmp_path / mode, server, mode)
            assert report.enriched == NOTES and report.failed == 0
            sent[mode] = json.dumps(sorted(json.dumps(c, sort_keys=True) for c in server.chats))
        assert (len(gets), sum(g is not None for g in gets)) == ((0, 0) if mode == "off" else (NOTES, NOTES))
    assert sent["on"] == sent["off"]


def test_a_child_that_dies_leaves_the_rest_to_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_start = buildahead.BuildAhead.start

    def start_then_die(self: buildahead.BuildAhead, first: int) -> None:
        real_start(self, first)
        assert self._pid is not None
        os.kill(self._pid, signal.SIGKILL)

    monkeypatch.setattr(buildahead.BuildAhead, "start", start_then_die)
    write_vault(tmp_path / "v", NOTES)
    with FakeOpenAI() as server:
        report, gets = run(tmp_path / "v", server, "on")
    assert report.enriched == NOTES and report.failed == 0
    assert any(g is None for g in gets)  # built in the loop once the child was gone
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # and the child was reaped


def test_a_build_that_fails_is_built_again_in_the_loop_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from enrich.prepare import RequestBuilder

    real_parts = RequestBuilder.parts

    def parts(self: RequestBuilder, vn: Any, c: Any) -> Any:
        if vn.id == "gen-00007":
            raise EnrichError("cannot build this one")
        return real_parts(self, vn, c)

    monkeypatch.setattr(RequestBuilder, "parts", parts)  # before the fork: the child fails on it too
    write_vault(tmp_path / "v", NOTES)
    with FakeOpenAI() as server:
        report, gets = run(tmp_path / "v", server, "on")
    failed = [r for r in report.results if r.status == "failed"]
    assert [(r.path, r.reason) for r in failed] == [("gen-00007.md", "cannot build this one")]
    assert report.enriched == NOTES - 1 and sum(g is None for g in gets) == 1


@pytest.mark.parametrize("busy, used", [(0.0, True), (10.0, False)])
def test_auto_starts_the_child_only_when_the_loop_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy: float, used: bool
) -> None:
    monkeypatch.setattr(buildahead, "MIN_NOTES", 8)
    monkeypatch.setattr(buildahead, "PROBE_NOTES", 4)
    monkeypatch.setattr(buildahead, "BUSY", busy)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(buildahead.sys, "platform", "linux")
    write_vault(tmp_path / "v", NOTES)
    with FakeOpenAI() as server:
        report, gets = run(tmp_path / "v", server, "auto")
    assert report.enriched == NOTES
    assert any(g is not None for g in gets) == used
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_off_one_core_or_a_small_run_never_forks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not buildahead.usable(10_000, "off")
    assert buildahead.usable(1, "on")
    assert not buildahead.usable(buildahead.MIN_NOTES - 1, "auto")
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert not buildahead.usable(10_000, "auto")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(buildahead.sys, "platform", "darwin")
    assert not buildahead.usable(10_000, "auto") and buildahead.usable(10_000, "on")
