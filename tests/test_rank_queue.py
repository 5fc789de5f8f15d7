"""Candidates ranked a block at a time in build order (CandidateQueue): the same candidates, each note ranked once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakeserver import FakeOpenAI
from fakeserver_limits import write_vault

from enrich import api, prepare
from enrich.pipeline import Pipeline, RunOptions, run_sync
from enrich.prepare import CandidateQueue
from enrich.related import CandidateIndex
from enrich.vault import Vault, scan_vault

K = 6


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    """A generated vault of 40 notes."""
    write_vault(tmp_path / "v", 40)
    return scan_vault(tmp_path / "v")


@pytest.fixture
def blocks(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Blocks of 7 notes; records the notes of every block ranked."""
    seen: list[list[str]] = []
    real = CandidateIndex.candidates_many

    def spy(self: CandidateIndex, vns: Any, k: int = 15) -> Any:
        seen.append([vn.rel for vn in vns])
        return real(self, vns, k)

    monkeypatch.setattr(CandidateIndex, "candidates_many", spy)
    monkeypatch.setattr(prepare, "RANK_BLOCK", 7)
    return seen


def test_the_queue_gives_what_ranking_each_note_alone_gives(vault: Vault, blocks: list[list[str]]) -> None:
    index = CandidateIndex(vault)
    alone = {vn.rel: index.candidates(vn, K) for vn in vault.notes}
    blocks.clear()
    queue = CandidateQueue(lambda: index, K, vault.notes)
    assert all(queue.get(vn) == alone[vn.rel] for vn in vault.notes)
    assert [len(b) for b in blocks] == [7] * 5 + [5]
    assert [rel for b in blocks for rel in b] == [vn.rel for vn in vault.notes]  # each note ranked once


def test_rank_next_ranks_only_after_a_block_is_used_up(vault: Vault, blocks: list[list[str]]) -> None:
    index = CandidateIndex(vault)
    notes = vault.notes[:10]
    queue = CandidateQueue(lambda: index, K, notes)
    assert queue.exhausted  # nothing ranked yet, notes left
    queue.get(notes[0])
    assert not queue.exhausted
    queue.rank_next()
    assert len(blocks) == 1
    for vn in notes[1:7]:
        queue.get(vn)
    assert queue.exhausted
    queue.rank_next()
    assert blocks[-1] == [vn.rel for vn in notes[7:]]
    assert [queue.get(vn) for vn in notes[7:]] == [index.candidates(vn, K) for vn in notes[7:]]
    assert len(blocks) == 2 + 3 and not queue.exhausted  # the three checks ranked alone; nothing left to rank
    queue.rank_next()
    assert len(blocks) == 5


def test_notes_taken_out_of_order_or_outside_it(vault: Vault, blocks: list[list[str]]) -> None:
    index = CandidateIndex(vault)
    notes, outside = vault.notes[:30], vault.notes[35]
    queue = CandidateQueue(lambda: index, K, notes)
    assert queue.get(notes[20]) == index.candidates(notes[20], K)
    assert blocks[0] == [vn.rel for vn in notes[20:27]]
    assert queue.get(notes[3]) == index.candidates(notes[3], K)  # a new block from there; the rest of the old is dropped
    assert blocks[2] == [vn.rel for vn in notes[3:10]]
    assert queue.get(notes[21]) == index.candidates(notes[21], K)
    assert blocks[4] == [vn.rel for vn in notes[21:28]]
    assert queue.get(outside) == index.candidates(outside, K)
    assert blocks[-1] == blocks[-2] == [outside.rel]  # ranked alone, as the check did


def run(folder: Path, server: FakeOpenAI) -> Any:
    """A run with four calls at a time."""
    vault, settings, roles, notes = api._open_for_run([folder], {"base_url": server.url, "model": "fake-model",
                                                                 "concurrency": 4, "build_ahead": "off"})
    model, factory, _ = api.model_for(settings)
    return run_sync(Pipeline(vault, settings, roles, factory, model, RunOptions()), notes)


def test_a_run_ranks_each_note_once_in_blocks_and_sends_the_requests_it_sent_before(
    tmp_path: Path, blocks: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ahead: list[int] = []
    real_next = CandidateQueue.rank_next

    def rank_next(self: CandidateQueue) -> None:
        before = len(blocks)
        real_next(self)
        ahead.append(len(blocks) - before)

    monkeypatch.setattr(CandidateQueue, "rank_next", rank_next)
    sent = []
    for block in (7, 1):
        monkeypatch.setattr(prepare, "RANK_BLOCK", block)
        blocks.clear()
        write_vault(tmp_path / str(block), 40)
        with FakeOpenAI() as server:
            report = run(tmp_path / str(block), server)
            assert report.enriched == 40 and report.failed == 0
            sent.append(sorted(json.dumps(c, sort_keys=True) for c in server.chats))
        ranked = sorted(rel for b in blocks for rel in b)
        assert ranked == sorted(set(ranked)) and len(ranked) == 40 and max(map(len, blocks)) == block
    assert sum(ahead) > 0  # some blocks were ranked ahead, after the last call of a block left
    assert sent[0] == sent[1]
