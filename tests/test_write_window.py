"""Answers that arrive close together are rewritten and written together; a note waiting for its window is
never half-written, and what it waited with is in the result cache."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fakeserver import FakeOpenAI
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
    sizes = count_flushes(monkeypatch)
    with FakeOpenAI() as server:
        pipe, notes = make_pipeline(tmp_path / "v", server)
        report = asyncio.run(pipe.run(notes))
    assert report.enriched == NOTES and sizes == [NOTES]
    assert all((tmp_path / "v" / name).read_bytes() != data for name, data in originals.items())


def test_a_window_closes_on_its_own_and_a_later_answer_opens_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_vault(tmp_path / "v", 2)
    monkeypatch.setattr(pipeline, "WRITE_WINDOW_S", 0.05)
    sizes = count_flushes(monkeypatch)
    with FakeOpenAI() as server:
        server.latency = 0.2  # the second answer comes well after the first window closed
        flags = {"base_url": server.url, "model": "fake-model", "build_ahead": "off", "concurrency": 1}
        vault_, settings, roles, notes = api._open_for_run([tmp_path / "v"], flags)
        model, factory, _ = api.model_for(settings)
        pipe = Pipeline(vault_, settings, roles, factory, model, RunOptions())
        report = asyncio.run(pipe.run(notes))
    assert report.enriched == 2 and sizes == [1, 1]


def test_notes_waiting_for_their_window_when_interrupted_are_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    originals = write_vault(tmp_path / "v", NOTES)
    monkeypatch.setattr(pipeline, "WRITE_WINDOW_S", 30.0)
    with FakeOpenAI() as server:
        pipe, notes = make_pipeline(tmp_path / "v", server)

        async def run_then_interrupt() -> Any:
            task = asyncio.create_task(pipe.run(notes))
            for _ in range(1000):
                if pipe._window is not None and len(pipe._window) == NOTES:  # every note answered, none written
                    break
                assert not task.done(), "the run ended without waiting for a window"
                await asyncio.sleep(0.01)
            pipe.interrupt()
            return await asyncio.wait_for(task, 10)  # the 30 s window is not waited for

        report = asyncio.run(run_then_interrupt())
    assert report.interrupted and report.enriched == NOTES
    assert all((tmp_path / "v" / name).read_bytes() != data for name, data in originals.items())


def test_notes_waiting_for_their_window_at_the_time_limit_are_untouched_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    originals = write_vault(tmp_path / "v", NOTES)
    monkeypatch.setattr(pipeline, "WRITE_WINDOW_S", 30.0)
    with FakeOpenAI() as server:
        pipe, notes = make_pipeline(tmp_path / "v", server)
        pipe.settings.time_limit = 1.0
        report = asyncio.run(pipe.run(notes))
        assert report.failed == NOTES and report.enriched == 0 and len(server.chats) == NOTES
        assert all((tmp_path / "v" / name).read_bytes() == data for name, data in originals.items())
        monkeypatch.setattr(pipeline, "WRITE_WINDOW_S", 0.01)
        pipe, notes = make_pipeline(tmp_path / "v", server)
        report = asyncio.run(pipe.run(notes))
        assert report.enriched == NOTES and report.cached == NOTES and len(server.chats) == NOTES  # no new call
