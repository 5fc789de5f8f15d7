"""`enrich run --batch` and `enrich batch status|collect` end to end: the CLI, the real SDK, the fake server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakeserver import FakeOpenAI, invalid, server_error
from fakeserver_limits import FakeBatchAPI, add_batch_api, write_vault
from test_interrupt import classify
from typer.testing import CliRunner

from enrich.batch import BatchState
from enrich.cli import cli
from enrich.cli_batch import register

if not any(group.name == "batch" for group in cli.registered_groups):
    register(cli)

runner = CliRunner()
NOTES = 8


@pytest.fixture(autouse=True)
def _no_real_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see a real key or config from the environment."""
    for name in ("OPENAI_API_KEY", "ENRICH_MODEL", "ENRICH_BASE_URL", "ENRICH_PROVIDER"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def api(fake_openai: FakeOpenAI) -> FakeBatchAPI:
    """The fake server with the Files and Batch API."""
    return add_batch_api(fake_openai)


def invoke(srv: FakeOpenAI, *args: str) -> Any:
    """Run the CLI against the fake server."""
    return runner.invoke(cli, [*args, "--base-url", srv.url])


def submit(srv: FakeOpenAI, vault: Path) -> str:
    """`enrich run --batch`; return the batch id it printed."""
    res = invoke(srv, "run", str(vault), "--batch", "--model", "fake-model")
    assert res.exit_code == 0, res.output
    return res.stdout.strip()


def collect(srv: FakeOpenAI, vault: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """`enrich batch collect --json`; return (exit code, report)."""
    res = invoke(srv, "batch", "collect", str(vault), *extra, "--json")
    return res.exit_code, json.loads(res.stdout) if res.stdout.strip() else {"output": res.output}


def test_submit_then_collect_applies_every_answer(tmp_path: Path, api: FakeBatchAPI) -> None:
    srv = api.srv
    originals = write_vault(tmp_path / "v", NOTES)
    batch_id = submit(srv, tmp_path / "v")
    assert classify(tmp_path / "v", originals) == (NOTES, 0) and not srv.chats
    upload = next(f for f in api.files.values() if f["purpose"] == "batch")
    lines = [json.loads(line) for line in upload["data"].decode().splitlines()]
    assert len(lines) == NOTES and len({ln["custom_id"] for ln in lines}) == NOTES
    for ln in lines:
        assert ln["method"] == "POST" and ln["url"] == "/v1/chat/completions"
        assert {"model", "messages", "response_format", "max_tokens"} <= set(ln["body"])
        assert ln["body"]["response_format"]["type"] == "json_schema" and ln["body"]["model"] == "fake-model"
    state = BatchState.load(tmp_path / "v", batch_id)
    assert sorted(item.path for item in state.items.values()) == sorted(originals)
    assert all(len(item.key) == 64 and item.content and item.sha for item in state.items.values())

    code, report = collect(srv, tmp_path / "v")
    assert code == 0, report
    assert report["from_batch"] == NOTES and report["enriched"] == NOTES and report["llm_calls"] == 0
    assert not srv.chats
    assert classify(tmp_path / "v", originals) == (0, NOTES)
    assert BatchState.load(tmp_path / "v").collected is not None

    again_code, again = collect(srv, tmp_path / "v")  # idempotent: everything is up to date now
    assert again_code == 0 and again["enriched"] == 0 and again["skipped"] == NOTES and not srv.chats
    undone = runner.invoke(cli, ["undo", str(tmp_path / "v")])
    assert undone.exit_code == 0, undone.output
    assert classify(tmp_path / "v", originals) == (NOTES, 0)


def test_status_and_collect_wait_for_a_running_batch(tmp_path: Path, api: FakeBatchAPI) -> None:
    api.polls_until_done = 2
    originals = write_vault(tmp_path / "v", 3)
    batch_id = submit(api.srv, tmp_path / "v")
    res = invoke(api.srv, "batch", "status", str(tmp_path / "v"), batch_id)
    assert res.exit_code == 0 and f"{batch_id}: in_progress" in res.stdout
    code, report = collect(api.srv, tmp_path / "v", batch_id)
    assert code == 75 and "in_progress" in report["output"] and "collect again later" in report["output"]
    assert classify(tmp_path / "v", originals) == (3, 0)
    status = json.loads(invoke(api.srv, "batch", "status", str(tmp_path / "v"), "--json").stdout)
    assert status == {"id": batch_id, "status": "completed", "total": 3, "completed": 3, "failed": 0,
                      "notes": 3, "collected": False}
    code, report = collect(api.srv, tmp_path / "v", batch_id)
    assert code == 0 and report["enriched"] == 3


def test_failed_and_invalid_items_are_retried_as_normal_calls(tmp_path: Path, api: FakeBatchAPI) -> None:
    srv = api.srv
    originals = write_vault(tmp_path / "v", NOTES)
    srv.push(invalid(), server_error(500))  # the first two batch lines
    submit(srv, tmp_path / "v")
    code, report = collect(srv, tmp_path / "v")
    assert code == 0, report
    assert report["from_batch"] == NOTES - 2 and len(report["invalid"]) == 2
    reasons = sorted(i["reason"] for i in report["invalid"])
    assert reasons[0].startswith("HTTP 500") and reasons[1].startswith("invalid answer")
    assert report["llm_calls"] == 2 == len(srv.chats) and report["enriched"] == NOTES
    assert classify(tmp_path / "v", originals) == (0, NOTES)


def test_no_retry_reports_failed_items_and_leaves_them_alone(tmp_path: Path, api: FakeBatchAPI) -> None:
    srv = api.srv
    originals = write_vault(tmp_path / "v", NOTES)
    srv.push(invalid(), server_error(500))
    submit(srv, tmp_path / "v")
    code, report = collect(srv, tmp_path / "v", "--no-retry")
    assert code == 1 and not srv.chats
    assert report["enriched"] == NOTES - 2 and report["failed"] == 2
    assert all("not retried" in f["reason"] for f in report["failures"])
    assert classify(tmp_path / "v", originals) == (2, NOTES - 2)


def test_a_note_changed_since_submission_is_planned_again(tmp_path: Path, api: FakeBatchAPI) -> None:
    srv = api.srv
    write_vault(tmp_path / "v", NOTES)
    submit(srv, tmp_path / "v")
    path = tmp_path / "v" / "gen-00002.md"
    path.write_text(path.read_text().replace("## 核心内容\n\n", "## 核心内容\n\nA new first paragraph about caches and queues.\n\n"))
    code, report = collect(srv, tmp_path / "v")
    assert code == 0, report
    assert report["changed"] == ["gen-00002.md"] and report["from_batch"] == NOTES - 1
    assert report["llm_calls"] == 1 and "A new first paragraph" in srv.chats[0]["messages"][-1]["content"]
    assert report["enriched"] == NOTES


def test_batch_needs_an_openai_compatible_api(tmp_path: Path) -> None:
    write_vault(tmp_path / "v", 2)
    res = runner.invoke(cli, ["run", str(tmp_path / "v"), "--batch", "--provider", "openai"])
    assert res.exit_code == 2 and "OPENAI_API_KEY" in res.output
    res = runner.invoke(cli, ["batch", "collect", str(tmp_path / "v")])
    assert res.exit_code == 2 and "no record of any batch" in res.output
