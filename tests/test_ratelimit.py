"""The rate limiter: unit behaviour, and runs against a fake server that enforces RPM/TPM."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fakeserver import FakeOpenAI, delayed, rate_limited
from fakeserver_limits import enforce_limits, fmt_duration, request_tokens, write_vault
from typer.testing import CliRunner

from enrich.cli import cli
from enrich.ratelimit import Estimator, RateLimiter, Snapshot, parse_duration
from enrich.tokens import counter_for

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_real_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see a real key or config from the environment."""
    for name in ("OPENAI_API_KEY", "ENRICH_MODEL", "ENRICH_BASE_URL", "ENRICH_PROVIDER"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("2m", 120.0),
     ("", None), ("soon", None), ("5x", None), ("1s2", None)],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_fake_server_durations_round_trip() -> None:
    for s in (0.02, 0.5, 1.5, 59.0, 360.0):
        assert parse_duration(fmt_duration(s)) == pytest.approx(s, abs=0.05)


def test_snapshot_reads_headers() -> None:
    snap = Snapshot.read({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-tokens": "1200",
                          "x-ratelimit-reset-tokens": "6m0s", "other": "x"})
    assert snap == Snapshot(limit_requests=500, remaining_tokens=1200, reset_tokens=360)
    assert Snapshot.read({"content-type": "application/json"}) is None


def test_estimator_matches_count_messages_and_reuses_seeds() -> None:
    counter = counter_for("gpt-4o-mini")
    msgs = [{"role": "system", "content": "Be brief. " * 30}, {"role": "user", "content": "Title: x\n" + "word " * 200}]
    est = Estimator(counter)
    assert est.prompt(msgs) == counter.count_messages(msgs)
    seeded = Estimator(counter)
    seeded.seed(msgs, counter.count_messages(msgs))
    assert seeded.prompt(msgs) == counter.count_messages(msgs)
    assert request_tokens({"model": "gpt-4o-mini", "messages": msgs, "max_tokens": 700}) == est.prompt(msgs) + 700


async def _grant_times(limiter: RateLimiter, costs: list[int]) -> list[float]:
    """Acquire concurrently; return when each was granted, relative to the start."""
    start = time.monotonic()

    async def one(cost: int) -> float:
        await limiter.acquire(cost)
        return time.monotonic() - start

    return list(await asyncio.gather(*(one(c) for c in costs)))


def test_requests_per_minute_are_paced_after_a_one_second_burst() -> None:
    times = asyncio.run(_grant_times(RateLimiter(rpm=1200), [1] * 40))  # 20/s, burst 20 minus a 0.25 s reserve
    assert sum(t < 0.05 for t in times) == 15
    assert 1.2 < max(times) < 1.7
    assert times == sorted(times)  # FIFO


def test_tokens_per_minute_are_paced() -> None:
    limiter = RateLimiter(tpm=600_000)  # 10,000 tokens/s, burst 10,000 minus a 2,500 reserve
    times = asyncio.run(_grant_times(limiter, [1000] * 20))
    assert sum(t < 0.05 for t in times) == 7
    assert 1.2 < max(times) < 1.7
    assert limiter.stats.acquired == 20 and limiter.stats.waited == 13


def test_no_limits_means_no_waiting() -> None:
    limiter = RateLimiter()
    asyncio.run(_grant_times(limiter, [5000] * 200))
    assert limiter.stats.acquired == 200 and limiter.stats.waited == 0  # counted, not timed: CI machines are shared


def test_a_cancelled_waiter_does_not_block_the_queue() -> None:
    async def go() -> float:
        limiter = RateLimiter(rpm=600)  # 10/s, burst 10
        for _ in range(10):
            await limiter.acquire(1)
        stuck = asyncio.create_task(limiter.acquire(1))
        await asyncio.sleep(0.01)
        stuck.cancel()
        start = time.monotonic()
        await limiter.acquire(1)
        return time.monotonic() - start

    assert asyncio.run(go()) < 0.2


def test_429_pauses_everyone_and_cuts_the_rate_once_per_episode() -> None:
    async def go() -> tuple[float, RateLimiter, int]:
        limiter = RateLimiter(rpm=6000)
        tickets = [await limiter.acquire(1) for _ in range(5)]
        limiter.settle(tickets[0], {}, 429, retry_after=0.3)  # known limits: a lone 429 only pauses
        start = time.monotonic()
        later = await limiter.acquire(1)
        waited = time.monotonic() - start
        first = limiter.stats.slowdowns
        limiter.settle(later, {}, 429, retry_after=0.0)  # a second episode soon after: cut
        limiter.settle(tickets[1], {}, 429, retry_after=0.0)  # sent before it: same episode, no second cut
        return waited, limiter, first

    waited, limiter, first = asyncio.run(go())
    assert 0.25 < waited < 0.6
    assert first == 0 and limiter.stats.throttled == 3 and limiter.stats.slowdowns == 1
    assert 0.85 < limiter.factor(limiter._cut_at) < 0.95  # noqa: SLF001 - a known limit: a small cut
    assert limiter.factor(limiter._cut_at + 30) == 1.0  # noqa: SLF001 - recovered after RECOVER_S


def test_limits_and_remaining_budget_are_learnt_from_headers() -> None:
    async def go() -> tuple[float, RateLimiter]:
        limiter = RateLimiter()
        t = await limiter.acquire(100)
        limiter.settle(t, {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0",
                           "x-ratelimit-limit-tokens": "1000000", "x-ratelimit-remaining-tokens": "900000"})
        start = time.monotonic()
        await limiter.acquire(50_000)  # tokens plenty; requests: 1 + a 0.25 s reserve at 10/s
        return time.monotonic() - start, limiter

    waited, limiter = asyncio.run(go())
    assert limiter.limits == (600, 1_000_000)
    assert 0.3 < waited < 0.5


def test_configured_limit_caps_what_the_server_allows() -> None:
    async def go() -> RateLimiter:
        limiter = RateLimiter(rpm=60)
        t = await limiter.acquire(1)
        limiter.settle(t, {"x-ratelimit-limit-requests": "10000", "x-ratelimit-remaining-requests": "9999"})
        return limiter

    assert asyncio.run(go()).limits == (60, None)


def test_unknown_limits_are_learnt_from_the_rate_that_drew_a_429() -> None:
    async def go() -> RateLimiter:
        limiter = RateLimiter()
        tickets = [await limiter.acquire(1) for _ in range(30)]
        limiter.settle(tickets[-1], {}, 429, retry_after=0.0)
        return limiter

    rpm, tpm = asyncio.run(go()).limits
    assert rpm is not None and 1000 <= rpm <= 1800 and tpm is None  # 30 in the 1 s minimum window


# ---------------------------------------------------------------- against the fake server


def invoke(srv: FakeOpenAI, vault: Path, *args: str) -> Any:
    """`enrich run --json` against the fake server."""
    return runner.invoke(cli, ["run", str(vault), "--json", "--base-url", srv.url, "--model", "fake-model", *args])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Note bytes under folder."""
    return {p.name: p.read_bytes() for p in folder.glob("*.md")}


def test_run_learns_server_limits_and_draws_few_429s(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    write_vault(tmp_path / "v", 60)
    lim = enforce_limits(fake_openai, rpm=1200, burst_s=1)  # 20 at once, then 20/s
    fake_openai.latency = 0.05
    res = invoke(fake_openai, tmp_path / "v", "-j", "16")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["enriched"] == 60 and report["rate_limited"] == lim.rejected
    assert lim.rejected <= 6, (lim.rejected, lim.accepted)  # <= 10%; without the limiter: dozens (and retries)
    assert lim.last is not None and lim.first is not None and lim.last - lim.first >= 1.8  # 40 paced at 20/s


def test_configured_tpm_paces_a_server_that_sends_no_headers(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    write_vault(tmp_path / "v", 40)
    per_request = 1300  # generated notes: ~600 prompt tokens + --max-tokens 700
    tpm = per_request * 20 * 60  # about 20 requests/s
    lim = enforce_limits(fake_openai, tpm=tpm, burst_s=1, send_headers=False)
    res = invoke(fake_openai, tmp_path / "v", "-j", "16", "--tpm", str(tpm), "--max-tokens", "700")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["enriched"] == 40
    assert lim.rejected <= 3, (lim.rejected, lim.tokens)


def test_a_server_that_always_answers_429_ends_within_the_time_limit(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    before = write_vault(tmp_path / "v", 6)
    fake_openai.default = rate_limited(1)
    start = time.monotonic()
    res = invoke(fake_openai, tmp_path / "v", "--time-limit", "3")
    elapsed = time.monotonic() - start
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert report["failed"] == 6 and report["enriched"] == 0 and report["rate_limited"] >= 1
    assert any("429" in w for w in report["warnings"])
    assert all("time limit" in f["reason"] or "429" in f["reason"] for f in report["failures"])
    assert elapsed < 3 + 4  # scan + plan, then at most the time limit
    assert snapshot(tmp_path / "v") == before
    assert len(fake_openai.chats) <= 15  # paused and slowed down (tenacity alone would send ~18)


def test_a_hung_server_is_abandoned_at_the_time_limit(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    before = write_vault(tmp_path / "v", 4)
    fake_openai.default = delayed(3600)
    start = time.monotonic()
    res = invoke(fake_openai, tmp_path / "v", "--time-limit", "1.5")
    assert time.monotonic() - start < 1.5 + 4
    assert res.exit_code == 1
    assert {f["reason"] for f in json.loads(res.stdout)["failures"]} == {"time limit of 1.5s reached"}
    assert snapshot(tmp_path / "v") == before


def test_count_messages_counts_each_system_prompt_once() -> None:
    counter = counter_for("gpt-4o-mini")
    system, user = "You enrich notes. " * 50, "An article about attention. " * 30
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    expected = counter.count(system) + counter.count(user) + 2 * 4 + 3
    assert counter.count_messages(messages) == expected
    assert counter._memo[system] == counter.count(system)
    other = [{"role": "system", "content": system}, {"role": "user", "content": "short"}]
    assert counter.count_messages(other) == counter.count(system) + counter.count("short") + 11


def test_request_tokens_count_the_article_and_candidate_lines_once() -> None:
    """Planning counts the article; building a request tokenises only what the run has not seen yet.

    The user message is never tokenised whole: its template without the values is counted once per run, each
    candidate line once per run; the total stays within 1% of a full count.
    """
    from dataclasses import dataclass, field

    from enrich.api import open_vault
    from enrich.prepare import RequestBuilder
    from enrich.tokens import Counter

    @dataclass(frozen=True)
    class Recording(Counter):
        seen: list[str] = field(default_factory=list, compare=False)

        def count(self, text: str) -> int:
            self.seen.append(text)
            return super().count(text)

    base = counter_for("gpt-4o-mini")
    for root in (Path(__file__).resolve().parents[1] / "fixtures" / "golden", SHARED / "vault-sample"):
        if not root.is_dir():
            continue
        counter = Recording(base.encoding, base.name, base.exact)
        vault, settings, _ = open_vault(root)
        builder = RequestBuilder(vault, settings, counter, "gpt-4o-mini")
        checked, built_counts = 0, []
        for vn in vault.notes:
            content = builder.content(vn)
            assert content.tokens == base.count(content.text)
            counter.seen.clear()
            req = builder.build(vn, content)
            exact = base.count_messages(req.messages)
            assert abs(req.prompt_tokens - exact) <= max(3, exact // 100), (vn.rel, req.prompt_tokens, exact)
            built_counts.extend(counter.seen)
            assert req.messages[-1]["content"] not in counter.seen
            if len(content.text) > 20:
                assert not any(content.text in text for text in counter.seen)
                checked += 1
        assert checked >= 10
        assert len(built_counts) == len(set(built_counts))  # nothing is tokenised twice in a run


def test_fit_paragraphs_returns_the_kept_texts_tokens() -> None:
    from enrich.tokens import fit_paragraphs

    counter = counter_for("gpt-4o-mini")
    text = "\n\n".join(f"Paragraph {i} about attention and memory in long documents." for i in range(50))
    whole = fit_paragraphs(text, counter, 10_000)
    assert whole == (text, False, counter.count(text))
    cut, truncated, n = fit_paragraphs(text, counter, 100)
    assert truncated and n == counter.count(cut) and n <= 100 and text.startswith(cut)


def _pipeline(root: Path, url: str, **flags: Any) -> Any:
    """A run's Pipeline over a vault against the fake server, and its notes."""
    from enrich import api
    from enrich.pipeline import Pipeline, RunOptions

    vault, settings, roles = api.open_vault(root, {"base_url": url, "model": "fake-model", **flags})
    model, factory, _ = api.model_for(settings)
    return Pipeline(vault, settings, roles, factory, model, RunOptions()), api.select_notes(vault, [], roles)


def _sent(srv: FakeOpenAI) -> list[str]:
    """The chat requests' messages, in a stable order."""
    return sorted(json.dumps(chat["messages"], ensure_ascii=False) for chat in srv.chats)


def test_a_run_with_no_token_limit_counts_no_tokens_and_sends_the_same_requests(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    write_vault(tmp_path / "a", 12)
    write_vault(tmp_path / "b", 12)
    plain, notes = _pipeline(tmp_path / "a", fake_openai.url)
    report = asyncio.run(plain.run(notes))
    assert report.enriched == 12 and report.estimated_prompt_tokens is None
    assert not plain.counter.loaded  # tiktoken's tables were never needed
    without = _sent(fake_openai)
    fake_openai.requests.clear()
    limited, notes = _pipeline(tmp_path / "b", fake_openai.url, tpm=10**9)
    report = asyncio.run(limited.run(notes))
    assert report.enriched == 12 and report.estimated_prompt_tokens and report.estimated_prompt_tokens > 12 * 300
    assert limited.counter.loaded
    assert _sent(fake_openai) == without  # counting changes no request


def test_a_token_limit_learnt_from_headers_starts_the_counting(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    write_vault(tmp_path / "v", 30)
    enforce_limits(fake_openai, tpm=10**9, burst_s=1)
    pipe, notes = _pipeline(tmp_path / "v", fake_openai.url, concurrency=4)
    counted: list[int] = []
    build = pipe.build

    def spy(*args: Any, **kwargs: Any) -> Any:
        req = build(*args, **kwargs)
        counted.append(req.prompt_tokens)
        return req

    pipe.build = spy
    report = asyncio.run(pipe.run(notes))
    assert report.enriched == 30 and pipe.limiter.counts_tokens and pipe.counter.loaded
    assert counted[0] is None and all(n is not None and n > 300 for n in counted[4:])  # the first wave went uncounted
    assert report.estimated_prompt_tokens is None  # a partial sum would mislead


def test_an_article_that_fits_by_its_bytes_is_not_counted(tmp_path: Path) -> None:
    from enrich import api
    from enrich.prepare import RequestBuilder
    from enrich.tokens import LazyCounter

    write_vault(tmp_path / "v", 3)
    vault, settings, _ = api.open_vault(tmp_path / "v", {"max_input_tokens": 400})
    vn = vault.notes[0]
    counting = RequestBuilder(vault, settings, counter_for("gpt-4o-mini"), "gpt-4o-mini")
    lazy = RequestBuilder(vault, settings, LazyCounter("gpt-4o-mini"), "gpt-4o-mini")
    lazy.count_tokens = False
    text = counting.content(vn).text
    assert len(text.encode()) > 400  # longer than the budget in bytes, not in tokens
    assert lazy.content(vn) == counting.content(vn)  # so it is counted: same text, same count
    short = "A short article about attention, well under the budget."
    assert lazy.counter_fit(short) == (short, False, None) and counting.counter_fit(short)[2] == 11
    long = "\n\n".join(f"Paragraph {i} about attention and memory in long documents." for i in range(80))
    assert lazy.counter_fit(long) == counting.counter_fit(long) and lazy.counter_fit(long)[1]  # truncated alike


def test_the_limiter_tokenises_nothing_without_a_token_limit() -> None:
    from enrich.tokens import LazyCounter

    lazy = LazyCounter("gpt-4o-mini")
    limiter = RateLimiter(rpm=600, tpm=None, estimator=Estimator(lazy))
    assert not limiter.counts_tokens
    assert limiter.cost([{"role": "user", "content": "x" * 400}], 100) > 100 and not lazy.loaded
    counting = RateLimiter(rpm=None, tpm=60_000, estimator=Estimator(lazy))
    assert counting.cost([{"role": "user", "content": "hello there"}], 100) == counter_for("gpt-4o-mini").count_messages(
        [{"role": "user", "content": "hello there"}]) + 100
    assert lazy.loaded
