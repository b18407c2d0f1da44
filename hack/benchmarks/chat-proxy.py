"""The latency chat-proxy adds: the same chat completions sent to the upstream directly and through the proxy.

    hack/bench chat-proxy                      # 400 requests each way, one at a time
    hack/bench chat-proxy --requests 2000 --warmup 200

The upstream is the repository's fake OpenAI-compatible server (``python -m fakeupstream``,
no latency injected), so what is measured is the proxy's own work: validation, the
call to the upstream, answering, metrics and logging. Both run as real processes on
loopback; the client keeps its connections alive (as an SDK does) and sends one request at
a time, alternating direct and proxied, so that both see the same machine at the same
moment. The figures are p50/p90/p99 and mean per path and the difference (proxy - direct)
at each. Every answer must be a 200 carrying the same completion both ways; the benchmark
says so and exits 1 otherwise.

It also reports the CPU time the proxy process spent per timed request (user + system, read
from ``/proc/<pid>/stat`` before and after; Linux only): on a small or shared machine that
figure is much steadier than wall-clock quantiles, so compare it first, back to back.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import httpx
from fakeupstream import running_fake_upstream
from modelkit.testing import running_module

QUANTILES = (0.5, 0.9, 0.99)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hack/bench chat-proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="timed requests each way")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests each way first")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def chat_body(n: int) -> dict[str, Any]:
    """A short support-desk question: the proxy's typical request."""
    return {"model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": "You are a helpful support agent."},
                         {"role": "user", "content": f"Summarise ticket {n} in one line."}]}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None where /proc has no answer)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def timed(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.post(url, json=body)
    return time.perf_counter() - started, response


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with running_fake_upstream() as upstream, running_module(
        "chat_proxy", {"UPSTREAM_BASE_URL": upstream, "OPENAI_API_KEY": "bench", "LOG_LEVEL": "WARNING"}
    ) as proxy, httpx.Client(timeout=30) as client:
        direct_url = upstream + "/chat/completions"
        proxy_url = proxy.base_url + "/api/v1/chat/completions"
        seconds: dict[str, list[float]] = {"direct": [], "chat-proxy": []}
        problems: list[str] = []
        cpu_before: float | None = None
        for n in range(args.warmup + args.requests):
            if n == args.warmup:
                cpu_before = process_cpu_s(proxy.process.pid)
            body = chat_body(n)
            direct_s, direct = timed(client, direct_url, body)
            proxied_s, proxied = timed(client, proxy_url, body)
            if direct.status_code != 200 or proxied.status_code != 200:
                problems.append(f"request {n}: direct {direct.status_code}, proxy {proxied.status_code}")
            elif (direct.json()["choices"][0]["message"]["content"]
                  != proxied.json()["choices"][0]["message"]["content"]):
                problems.append(f"request {n}: the proxy answered another completion")
            if n >= args.warmup:
                seconds["direct"].append(direct_s)
                seconds["chat-proxy"].append(proxied_s)
        cpu_after = process_cpu_s(proxy.process.pid)
    print(f"chat-proxy added latency: {args.requests} chat completions each way, one at a time, "
          f"after {args.warmup} untimed; keep-alive; fake upstream with no injected latency\n")
    columns = [f"p{round(q * 100)} ms" for q in QUANTILES] + ["mean ms"]
    header = f"{'path':<12}" + "".join(f"{column:>10}" for column in columns)
    print(header)
    print("-" * len(header))
    rows = {path: [quantile(values, q) * 1000 for q in QUANTILES] + [statistics.fmean(values) * 1000]
            for path, values in seconds.items()}
    rows["added"] = [p - d for p, d in zip(rows["chat-proxy"], rows["direct"], strict=True)]
    for path, figures in rows.items():
        print(f"{path:<12}" + "".join(f"{value:>10.2f}" for value in figures))
    if cpu_before is not None and cpu_after is not None:
        print(f"\nCPU of the chat-proxy process per request (user + system, from /proc): "
              f"{(cpu_after - cpu_before) * 1000 / args.requests:.2f} ms")
    for problem in problems[:10]:
        print(problem)
    print(f"\nevery request answered 200 with the same completion both ways: {'no' if problems else 'yes'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
