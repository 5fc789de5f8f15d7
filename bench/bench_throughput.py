"""Benchmark for issue 7: makespan against the concurrency / rate-limit bound, 429s, client CPU and memory.

Run by hand:  python bench/bench_throughput.py [--notes 1000] [--concurrency 32] [--latency 0.1] [--repeat 3]
              [--scenarios plain,tpm,tpm-config,tpm-nolimiter] [--disk] [--profile]

The fake server (tests/fakeserver*.py) runs in its own process so its CPU is not counted; each run is
a fresh client process driving the real Pipeline (the steps of api.run) over a generated vault
(on /dev/shm unless --disk).  Makespan is the call phase: from the end of planning to the end of
the run.  Bound: without limits ceil(N/C) x latency; with limits, the time the server's buckets
need to accept the run's requests and tokens (beyond their burst), plus one latency.
Targets: <= 1.10x the bound; <= 2% of requests answered 429; client CPU <= 2 ms per note.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


# ---------------------------------------------------------------- server process


def serve(args: argparse.Namespace) -> None:
    """Run the fake server until stdin closes; GET /stats and POST /stats/reset report and reset counters."""
    from fakeserver import FakeOpenAI, Recorded, Reply
    from fakeserver_limits import enforce_limits

    srv = FakeOpenAI().start()
    srv.latency = args.latency
    holder: dict[str, Any] = {"lim": None}

    def reset(req: Recorded) -> Reply:
        cfg = req.json or {}
        srv.routes[("POST", "/v1/chat/completions")] = srv.chat
        holder["lim"] = None
        if cfg.get("rpm") or cfg.get("tpm"):
            holder["lim"] = enforce_limits(srv, cfg.get("rpm"), cfg.get("tpm"), cfg.get("burst_s", 1.0), cfg.get("headers", True))
        with srv.lock:
            srv.requests.clear()
        return Reply(200, {"ok": True})

    def stats(req: Recorded) -> Reply:
        lim = holder["lim"]
        data = {"chats": len(srv.chats)}
        if lim is not None:
            data.update(accepted=lim.accepted, rejected=lim.rejected, tokens=lim.tokens, rpm=lim.rpm, tpm=lim.tpm,
                        burst_s=lim.burst_s, span=(lim.last or 0) - (lim.first or 0))
        return Reply(200, data)

    srv.routes[("POST", "/stats/reset")] = reset
    srv.routes[("GET", "/stats")] = stats
    print(srv.url, flush=True)
    sys.stdin.read()
    srv.stop()


def call(base: str, path: str, body: Any = None) -> Any:
    """One JSON request to the bench server's control routes."""
    url = base.removesuffix("/v1") + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as fh:
        return json.loads(fh.read())


# ---------------------------------------------------------------- client process


def client(args: argparse.Namespace) -> None:
    """One measured run in a fresh process; prints a JSON line of measurements."""
    import asyncio

    from enrich import api
    from enrich.pipeline import Pipeline, RunOptions
    from enrich.ratelimit import RateLimiter

    def cpu() -> float:
        """CPU seconds of this process and its reaped children (the process that builds requests ahead)."""
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    marks: dict[str, tuple[float, float]] = {"begin": (time.perf_counter(), cpu())}

    def mark(name: str) -> None:
        marks[name] = (time.perf_counter(), cpu())

    flags = {"base_url": args.url, "model": "fake-model", "concurrency": args.concurrency, "tpm": args.tpm, "rpm": args.rpm}
    vault, settings, roles = api.open_vault(Path(args.vault), {k: v for k, v in flags.items() if v})
    notes = api.select_notes(vault, [], roles)
    mark("scanned")
    model, factory, _ = api.model_for(settings)
    pipe = Pipeline(vault, settings, roles, factory, model, RunOptions(),
                    lambda ev, r, rep: mark("planned") if ev == "start" else None)
    if args.no_limiter:
        class NoLimiter(RateLimiter):
            def settle(self, *a: Any, **kw: Any) -> None:
                """Never learn, never wait: the baseline without client-side limits."""

        pipe.limiter = NoLimiter()
    mark("indexed")
    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    report = asyncio.run(pipe.run(notes))
    mark("done")
    if prof is not None:
        prof.disable()
        _print_profile(prof)
        if args.profile_out:
            prof.dump_stats(args.profile_out)
    assert isinstance(pipe.limiter, RateLimiter)
    print(json.dumps({
        "enriched": report.enriched, "failed": report.failed, "throttled": report.rate_limited,
        "phases": {name: [round(marks[name][0] - marks["begin"][0], 4), round(marks[name][1] - marks["begin"][1], 4)]
                   for name in marks},
        "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "child_maxrss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "limits": pipe.limiter.limits,
    }))


def _print_profile(prof: Any) -> None:
    """CPU of the call phase grouped by where it is spent (to stderr)."""
    import pstats

    st = pstats.Stats(prof)
    groups: dict[str, float] = {}
    for (filename, _, func), (_, _, tottime, _, _) in st.stats.items():  # type: ignore[attr-defined]
        key = func[:34] if filename == "~" else _group(filename)
        groups[key] = groups.get(key, 0.0) + tottime
    total = sum(groups.values())
    for key, t in sorted(groups.items(), key=lambda kv: -kv[1])[:22]:
        print(f"  {key:<34} {t:7.2f}s  {100 * t / total:5.1f}%", file=sys.stderr)


def _group(filename: str) -> str:
    """enrich/<module>, a third-party package name, or 'python'."""
    if "/enrich/" in filename:
        return "enrich/" + filename.split("/enrich/")[-1]
    if "site-packages/" in filename:
        return filename.split("site-packages/")[-1].split("/")[0]
    return "stdlib " + filename.split("/lib/python3")[-1].split("/", 1)[-1] if "/lib/python" in filename else filename[-34:]


# ---------------------------------------------------------------- orchestration

SCENARIOS: dict[str, dict[str, Any]] = {
    "plain": {},
    "tpm": {"server": {"tpm": "T", "burst_s": 1.0}},
    "tpm-config": {"server": {"tpm": "T", "burst_s": 1.0, "headers": False}, "client": {"tpm": "T"}},
    "tpm-nolimiter": {"server": {"tpm": "T", "burst_s": 1.0}, "client": {"no_limiter": True}},
    "rpm": {"server": {"rpm": "R", "burst_s": 1.0}},
}


def one_run(args: argparse.Namespace, url: str, name: str, tpm: int, rpm: int) -> dict[str, Any]:
    """Generate a vault, reset the server, run one client process, collect the numbers."""
    from fakeserver_limits import write_vault

    sc = SCENARIOS[name]
    fill = {"T": tpm, "R": rpm}
    server_cfg = {k: fill.get(v, v) if isinstance(v, str) else v for k, v in sc.get("server", {}).items()}
    client_cfg = {k: fill.get(v, v) if isinstance(v, str) else v for k, v in sc.get("client", {}).items()}
    base = None if args.disk else "/dev/shm"
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        write_vault(Path(tmp) / "v", args.notes)
        call(url, "/stats/reset", server_cfg)
        cmd = [sys.executable, __file__, "client", "--vault", str(Path(tmp) / "v"), "--url", url,
               "--concurrency", str(args.concurrency)]
        for key, value in client_cfg.items():
            cmd += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
        cmd += ["--profile"] if args.profile else []
        cmd += ["--profile-out", args.profile_out] if args.profile_out else []
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        if args.profile:
            sys.stderr.write(f"[{name}] CPU by module (whole client process):\n{proc.stderr}")
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["server"] = call(url, "/stats")
    data["bound"] = bound(args, data["server"])
    return data


def bound(args: argparse.Namespace, server: dict[str, Any]) -> float:
    """The fastest the run could finish: concurrency x latency, or what the limits allow."""
    b = math.ceil(args.notes / args.concurrency) * args.latency
    for per_minute, total in ((server.get("tpm"), server.get("tokens")), (server.get("rpm"), server.get("accepted"))):
        if per_minute and total:
            rate = per_minute / 60
            b = max(b, max(0.0, total - rate * server["burst_s"]) / rate + args.latency)
    return b


def summarise(name: str, runs: list[dict[str, Any]], n: int) -> str:
    """One Markdown table row: medians over the runs."""
    def med(f: Any) -> float:
        return statistics.median(f(r) for r in runs)

    makespan = med(lambda r: r["phases"]["done"][0] - r["phases"]["planned"][0])
    ratio = med(lambda r: (r["phases"]["done"][0] - r["phases"]["planned"][0]) / r["bound"])
    rej = med(lambda r: r["server"].get("rejected", 0))
    reqs = med(lambda r: r["server"].get("accepted", r["server"]["chats"]) + r["server"].get("rejected", 0))
    cpu = med(lambda r: r["phases"]["done"][1] - r["phases"]["begin"][1]) / n * 1000
    each = sorted((r["phases"]["done"][1] - r["phases"]["begin"][1]) / n * 1000 for r in runs)
    spread = f" ({each[0]:.1f}-{each[-1]:.1f})" if len(each) > 1 else ""
    cpu_calls = med(lambda r: r["phases"]["done"][1] - r["phases"]["planned"][1]) / n * 1000
    cpu_prep = med(lambda r: r["phases"]["planned"][1] - r["phases"]["begin"][1]) / n * 1000
    wall = med(lambda r: r["phases"]["done"][0] - r["phases"]["begin"][0])
    rss = med(lambda r: r["maxrss_mb"])
    child = med(lambda r: r.get("child_maxrss_mb", 0.0))
    ok = med(lambda r: r["enriched"])
    return (f"| {name} | {ok:.0f}/{n} | {med(lambda r: r['bound']):.2f} s | {makespan:.2f} s | {ratio:.2f}x | "
            f"{rej:.0f} ({100 * rej / max(reqs, 1):.1f}%) | {cpu:.1f} ms{spread} | {cpu_prep:.1f} + {cpu_calls:.1f} ms | "
            f"{wall:.1f} s | {rss:.0f} MB{f' + {child:.0f} MB' if child else ''} |")


def main() -> None:
    """Parse arguments, run the chosen mode."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", default="bench", choices=["bench", "serve", "client"])
    ap.add_argument("--notes", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scenarios", default="plain,tpm,tpm-config,tpm-nolimiter")
    ap.add_argument("--bound-s", type=float, default=12.0, help="target length of the limited runs' bound")
    ap.add_argument("--disk", action="store_true", help="generate the vault on disk (default: /dev/shm)")
    ap.add_argument("--profile", action="store_true", help="print client CPU by module (slows the run)")
    ap.add_argument("--profile-out", help="with --profile: also save the client's pstats to this file")
    ap.add_argument("--vault")
    ap.add_argument("--url")
    ap.add_argument("--tpm", type=int)
    ap.add_argument("--rpm", type=int)
    ap.add_argument("--no-limiter", action="store_true")
    args = ap.parse_args()
    if args.mode == "serve":
        serve(args)
    elif args.mode == "client":
        client(args)
    else:
        bench(args)


def tokens_per_request(n: int = 100) -> float:
    """Mean tokens the server charges per request (prompt + max_tokens) on a generated vault."""
    from fakeserver_limits import write_vault

    from enrich import api

    with tempfile.TemporaryDirectory() as tmp:
        write_vault(Path(tmp) / "v", n)
        rep = api.plan([Path(tmp) / "v"], {"model": "fake-model", "base_url": "http://127.0.0.1:9/v1"})
    return rep.prompt_tokens / max(rep.to_enrich, 1) + 700


def reference_loop() -> float:
    """CPU seconds of a fixed pure-Python loop (best of 3): how fast this machine runs Python, to compare sessions."""
    best = math.inf
    for _ in range(3):
        start, total = time.process_time(), 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.process_time() - start)
    return best


def bench(args: argparse.Namespace) -> None:
    """Start the server, run every scenario `repeat` times, print the table."""
    per_request = tokens_per_request()
    tpm = int(per_request * args.notes / args.bound_s * 60)
    rpm = int(args.notes / args.bound_s * 60)
    server = subprocess.Popen([sys.executable, __file__, "serve", "--latency", str(args.latency)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    print(f"N={args.notes} C={args.concurrency} latency={args.latency}s tpm={tpm:,} rpm={rpm:,} "
          f"({per_request:.0f} tokens/request) "
          f"vault on {'disk' if args.disk else '/dev/shm'}; load {os.getloadavg()[0]:.1f}; medians of {args.repeat}; "
          f"reference loop (10^7 additions) {reference_loop():.2f} s\n")
    print("| scenario | enriched | bound | makespan | ratio | 429s | client CPU/note | prep + calls | wall | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    try:
        for name in args.scenarios.split(","):
            runs = [one_run(args, url, name, tpm, rpm) for _ in range(args.repeat)]
            print(summarise(name, runs, args.notes), flush=True)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
