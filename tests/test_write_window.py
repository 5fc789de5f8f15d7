"""Answers that arrive close together are rewritten and written together; a note waiting in its group is never
half-written, and its answer is in the result cache."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator

import pytest
from fakeserver import FakeOpenAI, answer, delayed
from fakeserver_limits import write_vault

import enrich.pipeline as pipeline
from enrich import api
from enrich.pipeline import Pipeline, RunOptions
from enrich.writer import NoteWriter

NOTES = 8


def make_pipeline(vault: Path, server: FakeOpenAI) -> tuple[Pipeline, list[Any]]:
    """A pipeline over every note of the vault (no build-ahead child), and its notes."""
    flags = {"base_url": server.url, "model": "fake-model", "build_ahead": "off", "concurrency": NOTES}
    vault_, settings, roles, notes = api._open_for_run([vault], flags)
    model, factory, _ = api.model_for(settings)
    return Pipeline(vault_, settings, roles, factory, model, RunOptions()), notes


def count_flushes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record how many notes each writer flush wrote."""
    sizes: list[int] = []
    real = NoteWriter._flush

    def flush(self: NoteWriter) -> None:
        sizes.append(len(self._pending))
        real(self)

    monkeypatch.setattr(NoteWriter, "_flush", flush)
    return sizes


def test_answers_within_one_window_are_written_in_one_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    originals = write_vault(tmp_path / "v", NOTES)
    monkeypatch.setattr(pipeline, "WRITE_WINDOW_S", 1.0)  # every answer of the run arrives within it
    monkeypatch.setattr(pipeline, "WRITE_WINDOW_NOTES", 1000)
    sizes = count_flushes(monkeypatch)
    with FakeOpenAI() as server:
        pipe, notes = make_pipeline(tmp_path / "v", server)
        report = asyncio.run(pipe.run(notes))
    assert report.enriched == NOTES and sizes == [NOTES]
    assert all((tmp_path / "v" / name).read_bytes() != data for name, data in originals.items())


def test_a_group_closes_after_the_window_while_a_call_is_still_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_vault(tmp_path / "v", 2)
    monkeypatch.setattr(pipeline, "WRITE_WINDOW_S", 0.05)
    sizes = count_flushes(monkeypatch)
    with FakeOpenAI() as server:
        server.push(answer(), delayed(0.5))  # the second answer comes well after the first group closed
        pipe, notes = make_pipeline(tmp_path / "v", server)
        report = asyncio.run(pipe.run(notes))
    assert report.enriched == 2 and sizes == [1, 1]


def test_a_group_closes_at_its_size_and_when_no_call_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_vault(tmp_path / "v", NOTES)
    monkeypatch.setattr(pipeline, "WRITE_WINDOW_S", 30.0)  # never the reason a group closes here
    monkeypatch.setattr(pipeline, "WRITE_WINDOW_NOTES", 3)
    groups: list[int] = []
    real = Pipeline._close_window

    def close(self: Pipeline) -> Any:
        groups.append(len(self._window or []))
        return real(self)

    monkeypatch.setattr(Pipeline, "_close_window", close)
    with FakeOpenAI() as server:
        pipe, notes = make_pipeline(tmp_path / "v", server)
        report = asyncio.run(asyncio.wait_for(pipe.run(notes), 20))
    assert report.enriched == NOTES and sum(groups) == NOTES and max(groups) <= 3


@pytest.fixture
def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[dict[str, bytes], FakeOpenAI]]:
    """A vault, and a server giving seven answers at once and one 30 s later: seven notes wait in a group while
    a call is out (the group itself would wait 30 s)."""
    monkeypatch.setattr(pipeline, "WRITE_WINDOW_S", 30.0)
    monkeypatch.setattr(pipeline, "WRITE_WINDOW_NOTES", 1000)
    originals = write_vault(tmp_path / "v", NOTES)
    with FakeOpenAI() as server:
        server.push(*[answer()] * (NOTES - 1), delayed(30.0))
        yield originals, server


async def until_grouped(pipe: Pipeline, task: asyncio.Task[Any], n: int) -> None:
    """Wait until n notes wait in the pipeline's write group."""
    for _ in range(1000):
        if pipe._window is not None and len(pipe._window) == n:
            return
        assert not task.done(), "the run ended without grouping its notes"
        await asyncio.sleep(0.01)
    raise AssertionError("the notes never waited together")


def test_notes_waiting_in_a_group_when_interrupted_are_written_whole(tmp_path: Path, held: Any) -> None:
    originals, server = held
    pipe, notes = make_pipeline(tmp_path / "v", server)

    async def run_then_interrupt() -> Any:
        task = asyncio.create_task(pipe.run(notes))
        await until_grouped(pipe, task, NOTES - 1)
        pipe.interrupt()
        return await asyncio.wait_for(task, 10)  # neither the 30 s group nor the 30 s answer is waited for

    report = asyncio.run(run_then_interrupt())
    changed = [name for name, data in originals.items() if (tmp_path / "v" / name).read_bytes() != data]
    assert report.interrupted and report.enriched == NOTES - 1 and len(changed) == NOTES - 1


def test_notes_waiting_in_a_group_at_the_time_limit_are_untouched_and_cached(tmp_path: Path, held: Any) -> None:
    originals, server = held
    pipe, notes = make_pipeline(tmp_path / "v", server)
    pipe.settings.time_limit = 1.0
    report = asyncio.run(pipe.run(notes))
    assert report.failed == NOTES and report.enriched == 0 and len(server.chats) == NOTES
    assert all((tmp_path / "v" / name).read_bytes() == data for name, data in originals.items())
    assert pipe._window is None and pipe._window_timer is None  # the cancelled group leaves no state behind
    server.script.clear()
    pipe, notes = make_pipeline(tmp_path / "v", server)
    report = asyncio.run(pipe.run(notes))
    assert report.enriched == NOTES and report.cached == NOTES - 1 and len(server.chats) == NOTES + 1
