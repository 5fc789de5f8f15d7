"""Client CPU of one provider call, by HTTP client: the openai SDK's httpx, its aiohttp transport, direct aiohttp, enrich's own (asyncio).

Run by hand: python bench/bench_http_client.py [--calls 1000] [--concurrency 32] [--latency 0.1]
The fake server (tests/fakeserver.py) runs in another process, so only the client's CPU is measured.
Used for issue 7: what one SDK call costs on this machine, before any of enrich's own work, and how close
bare SDK calls alone come to the concurrency bound ceil(calls / concurrency) x latency.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _serve(queue: Any, latency: float) -> None:
    """Run the fake server until the parent exits."""
    from fakeserver import FakeOpenAI

    srv = FakeOpenAI().start()
    srv.latency = latency
    queue.put(srv.url)
    time.sleep(3600)


def _cpu() -> float:
    """This process's CPU seconds."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _measure(url: str, client: str, calls: int, concurrency: int) -> tuple[float, float]:
    """(wall seconds, CPU ms per call) for `calls` provider calls after a warm-up."""
    from enrich.providers.openai_provider import OpenAIProvider
    from enrich.schema import output_spec

    provider = OpenAIProvider("fake-model", url, "k", http_client=client)
    spec = output_spec([f"note-{i}" for i in range(15)], "self")
    messages = [{"role": "system", "content": "s" * 2000}, {"role": "user", "content": "u" * 4000}]
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await provider.complete(messages, spec.schema, max_tokens=700)

    await asyncio.gather(*[one() for _ in range(2 * concurrency)])
    cpu, start = _cpu(), time.perf_counter()
    await asyncio.gather(*[one() for _ in range(calls)])
    wall, used = time.perf_counter() - start, _cpu() - cpu
    await provider.aclose()
    return wall, 1000 * used / calls


def main() -> None:
    """Measure each client twice, alternating."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.1)
    args = ap.parse_args()
    queue: Any = mp.Queue()
    server = mp.Process(target=_serve, args=(queue, args.latency), daemon=True)
    server.start()
    url = queue.get()
    bound = math.ceil(args.calls / args.concurrency) * args.latency
    print(f"| http client | wall (bound {bound:.2f} s) | ratio | client CPU per call |\n| --- | --- | --- | --- |")
    for client in ("httpx", "aiohttp", "direct", "asyncio") * 2:
        wall, per_call = asyncio.run(_measure(url, client, args.calls, args.concurrency))
        print(f"| {client} | {wall:.2f} s | {wall / bound:.2f}x | {per_call:.2f} ms |", flush=True)
    server.terminate()


if __name__ == "__main__":
    main()
