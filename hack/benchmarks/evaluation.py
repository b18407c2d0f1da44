"""How long an evaluation step of the 50 labelled songs takes, and what it costs, per concurrency.

    hack/bench evaluation                          # concurrency 1, 4, 8, 16; 1.5 s per model call
    hack/bench evaluation --compare-to-stable      # also each level with stable answering the cases
    hack/bench evaluation --concurrency 8 --latency 0.5

The case set is examples/evaluation/song-analyzer.yaml (the ConfigMap's ``cases.jsonl`` and
``schema.json``: 50 songs labelled by the reference fine-tune, +-10), parsed by the operator's
own ``modeldeploy.analysis.evaluation.parse_cases`` / ``parse_schema``. The step is the
README's ("Judging the answers"): ``path: /analyze``, ``schemaKey: schema.json``, ``minScore:
0.9``, ``timeoutSeconds: 30`` and, with ``--compare-to-stable``, ``compareToStable: {path:
$.score, tolerance: 10, minAgreement: 0.9}``; only ``concurrency`` changes between rows.

What runs: the repository's fake OpenAI-compatible upstream (``python -m fakeupstream``) with
``--latency`` seconds added to every call of both models (a fine-tuned gpt-4o-mini takes
about that for a song's analysis), and the real song-analyzer service as a process
(``python -m song_analyzer``, as the sandbox's kubelet runs it) for the canary's model, plus
one for stable's with ``--compare-to-stable``. The cases go through the operator's code path:
``EvaluationRunner.send_cases`` (its HTTP client, ``concurrency`` cases in flight, the
``X-Model-Tokens`` / ``X-Model-Cost-USD`` headers read from each answer), then
``evaluation.judge`` for the verdict, score, tokens and ``cost_usd``. The runner's
``KubeClient`` is a real one that is never started (``send_cases`` reads nothing from the
API; the ConfigMap is read from the file instead).

song-analyzer caches analyses in its process, so every row runs against fresh service
processes: no case is answered from a cache (the report checks it: each answer's
``cached`` field, and the calls the fake upstream received). Each fresh process is warmed
with one song that is not a case (its first call opens the connection to the upstream),
with no latency, before the timed run.

Besides the measured figures it prints the floor (ceil(cases / concurrency) x latency: every
case one model call, in waves) and what the same evaluation costs with typical songs: the
fake's token counts are those of 2-line lyrics, while the song-analyzer preset prices a
typical song at 2,300 input + 300 output tokens ($0.00105 on a gpt-4o-mini fine-tune, from
``modelkit.pricing``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from fakeupstream import FakeUpstreamClient, running_fake_upstream
from kubernetes.client import ApiClient
from modeldeploy import spec as s
from modeldeploy.analysis import evaluation as ev
from modeldeploy.evaluation_runner import EvaluationRunner
from modeldeploy.kube.cache import ClusterCache
from modeldeploy.kube.client import KubeClient
from modelkit.pricing import cost_usd as price_of
from modelkit.testing import ServiceProcess, running_module

REPO_ROOT = Path(__file__).resolve().parents[2]
CASES_FILE = REPO_ROOT / "examples" / "evaluation" / "song-analyzer.yaml"
CANARY_MODEL = "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v2"
STABLE_MODEL = "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v1"
# A typical song's analysis, as the song-analyzer preset's cost gate assumes (README.md's
# presets table; operator/modeldeploy/analysis/presets.py).
TYPICAL_INPUT_TOKENS = 2300
TYPICAL_OUTPUT_TOKENS = 300
# The README's example step; `concurrency` is set per row.
STEP = {"configMap": "song-analyzer-eval", "schemaKey": "schema.json", "path": "/analyze",
        "minScore": 0.9, "timeoutSeconds": 30}
COMPARE = {"path": "$.score", "tolerance": 10, "minAgreement": 0.9}
WARMUP_SONG = {"artist": "Bench Warmers", "title": "Not A Case",
               "lyrics": "One line to open the connection\nand another one, then the clock starts"}


@dataclass(frozen=True)
class Row:
    concurrency: int
    compare: bool
    wall_s: float
    result: s.EvaluationStatus
    cached: int  # answers that said "cached": true
    upstream_calls: int  # chat completions the fake upstream answered during the run

    @property
    def cases_per_s(self) -> float:
        return self.result.cases / self.wall_s if self.wall_s else 0.0


def concurrency_list(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of integers") from None
    if not levels or any(not 1 <= level <= 64 for level in levels):
        raise argparse.ArgumentTypeError(f"{text!r}: each level 1-64 (the step's limits)")
    return levels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hack/bench evaluation", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=concurrency_list, default=[1, 4, 8, 16],
                        help="the step's concurrency levels, comma-separated (default 1,4,8,16)")
    parser.add_argument("--latency", type=float, default=1.5,
                        help="seconds the fake upstream adds to every model call (default 1.5)")
    parser.add_argument("--compare-to-stable", action="store_true",
                        help="also run each level with compareToStable: stable answers every case "
                        "at the same time")
    parser.add_argument("--cases", type=Path, default=CASES_FILE,
                        help="the ConfigMap file holding cases.jsonl and schema.json")
    args = parser.parse_args(argv)
    if not 0 <= args.latency <= 25:
        parser.error("--latency must be 0-25 s (the step's timeoutSeconds is 30)")
    return args


def load_cases(path: Path) -> tuple[list[ev.Case], ev.Schema | None]:
    """The cases and schema of a ConfigMap file, as the operator parses them."""
    configmap = yaml.safe_load(path.read_text(encoding="utf-8"))
    data = configmap["data"]
    cases = ev.parse_cases(data["cases.jsonl"], f"{path.name} cases.jsonl")
    schema_text = data.get(STEP["schemaKey"])
    schema = None if schema_text is None else ev.parse_schema(schema_text, f"{path.name} schema.json")
    return cases, schema


def evaluation_step(concurrency: int, compare: bool) -> s.EvaluationStep:
    body: dict[str, Any] = {**STEP, "concurrency": concurrency}
    if compare:
        body["compareToStable"] = COMPARE
    return s.EvaluationStep.model_validate(body)


def unused_kube_client() -> KubeClient:
    """A real KubeClient, never started: EvaluationRunner.send_cases does not use it."""
    api = ApiClient()
    return KubeClient(api, ClusterCache(api, "hack/bench evaluation", [], lambda _ns, _name: None))


async def send(step: s.EvaluationStep, cases: list[ev.Case], revision: str, canary_url: str,
               stable_url: str | None) -> tuple[float, list[ev.Answer], list[ev.Answer] | None]:
    runner = EvaluationRunner(unused_kube_client(), lambda _ns, _name: None)
    try:
        started = time.perf_counter()
        canary, stable = await runner.send_cases(step, cases, revision, canary_url, stable_url)
        return time.perf_counter() - started, canary, stable
    finally:
        await runner.stop()


def was_cached(answer: ev.Answer) -> bool:
    try:
        body = json.loads(answer.body)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("cached") is True


@contextmanager
def song_analyzer(upstream: str, model: str) -> Iterator[ServiceProcess]:
    """A fresh song-analyzer process (an empty cache), warmed with one song that is not a case."""
    env = {"LLM_API_BASE_URL": upstream, "LLM_MODEL": model, "OPENAI_API_KEY": "bench",
           "LOG_LEVEL": "WARNING"}
    with running_module("song_analyzer", env) as service:
        warm = httpx.post(service.base_url + "/analyze", json=WARMUP_SONG, timeout=30)
        if warm.status_code != 200:
            raise RuntimeError(f"song-analyzer ({model}) answered the warm-up {warm.status_code}: "
                               f"{warm.text[:300]}")
        yield service


def one_row(concurrency: int, compare: bool, cases: list[ev.Case], schema: ev.Schema | None,
            upstream_url: str, latency_s: float) -> Row:
    step = evaluation_step(concurrency, compare)
    revision = f"bench-c{concurrency}{'-compare' if compare else ''}"
    with FakeUpstreamClient(upstream_url) as upstream, ExitStack() as services:
        upstream.reset()  # warm-ups answer at once
        canary = services.enter_context(song_analyzer(upstream_url, CANARY_MODEL))
        stable = services.enter_context(song_analyzer(upstream_url, STABLE_MODEL)) if compare else None
        for model in (CANARY_MODEL, STABLE_MODEL):
            upstream.set_fault(model, latency_s=latency_s)
        upstream.reset_stats()
        wall_s, canary_answers, stable_answers = asyncio.run(
            send(step, cases, revision, canary.base_url, stable.base_url if stable else None))
        calls = sum(counts.get("success", 0) for counts in upstream.stats().values())
        upstream.reset()
    result = ev.judge(step, cases, canary_answers, stable_answers, schema, revision=revision,
                      index=0, step_started_at="", finished_at="")
    cached = sum(1 for answer in [*canary_answers, *(stable_answers or [])] if was_cached(answer))
    return Row(concurrency, compare, wall_s, result, cached, calls)


def table(rows: list[list[str]]) -> None:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.rjust(w) if c else cell.ljust(w)
                        for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def report(args: argparse.Namespace, rows: list[Row], cases: int, took_s: float) -> None:
    where = args.cases.relative_to(REPO_ROOT) if args.cases.is_relative_to(REPO_ROOT) else args.cases
    print(f"evaluation step: {cases} cases ({where}), "
          f"song-analyzer (canary {CANARY_MODEL}"
          f"{f', stable {STABLE_MODEL}' if args.compare_to_stable else ''}) against the fake upstream "
          f"with {args.latency:g}s per model call; fresh service processes per row; took {took_s:.0f}s")
    print(f"step: {json.dumps(STEP)}, concurrency per row"
          f"{f'; compare rows add compareToStable {json.dumps(COMPARE)}' if args.compare_to_stable else ''}")
    print()
    first = {compare: next(r for r in rows if r.compare == compare) for compare in {r.compare for r in rows}}
    header = ["concurrency", "stable too", "wall s", "floor s", "wall/floor", "cases/s", "speedup",
              "verdict", "score", "agreement", "upstream calls", "cached", "tokens", "cost USD"]
    lines = [header]
    for r in rows:
        floor = math.ceil(r.result.cases / r.concurrency) * args.latency
        base = first[r.compare]
        lines.append([
            str(r.concurrency), "yes" if r.compare else "no", f"{r.wall_s:.2f}", f"{floor:.1f}",
            f"{r.wall_s / floor:.2f}" if floor else "-", f"{r.cases_per_s:.2f}",
            f"x{r.cases_per_s / base.cases_per_s:.2f}", str(r.result.verdict.value),
            f"{r.result.score:.2f}" if r.result.score is not None else "-",
            f"{r.result.agreement:.2f}" if r.result.agreement is not None else "-",
            str(r.upstream_calls), str(r.cached), str(r.result.tokens), f"{r.result.cost_usd:.6f}",
        ])
    table(lines)
    print("\nspeedup: cases/s against the first row of the same kind; floor: ceil(cases / "
          "concurrency) x latency")
    if args.compare_to_stable:
        print("\ncompareToStable against the canary alone, same concurrency:")
        pairs = [["concurrency", "wall ratio", "cost ratio", "tokens ratio"]]
        for alone in (r for r in rows if not r.compare):
            both = next((r for r in rows if r.compare and r.concurrency == alone.concurrency), None)
            if both is None:
                continue
            pairs.append([str(alone.concurrency), f"x{both.wall_s / alone.wall_s:.2f}",
                          f"x{both.result.cost_usd / alone.result.cost_usd:.2f}"
                          if alone.result.cost_usd else "-",
                          f"x{both.result.tokens / alone.result.tokens:.2f}" if alone.result.tokens else "-"])
        table(pairs)
    sample = rows[0]
    answers = sample.result.cases * (2 if sample.compare else 1)
    per_case_tokens = sample.result.tokens / answers if answers else 0.0
    per_case_usd = sample.result.cost_usd / answers if answers else 0.0
    typical = price_of(CANARY_MODEL, TYPICAL_INPUT_TOKENS, TYPICAL_OUTPUT_TOKENS)
    print(f"\nmeasured per answer: {per_case_tokens:.0f} tokens, ${per_case_usd:.7f} (the cases' "
          "lyrics are 2-3 lines)")
    if typical is not None:
        print(f"with typical songs ({TYPICAL_INPUT_TOKENS:,} input + {TYPICAL_OUTPUT_TOKENS} output "
              f"tokens, {CANARY_MODEL.split(':')[1]} fine-tune price from modelkit.pricing): "
              f"${typical:.5f} a song; {cases} cases = ${typical * cases:.4f} on the canary alone, "
              f"${2 * typical * cases:.4f} with compareToStable (stable answers them too)")
    problems = [r for r in rows if r.cached or r.upstream_calls != r.result.cases * (2 if r.compare else 1)]
    print(f"every case reached the model (no cache hit, one upstream call per answer): "
          f"{'no' if problems else 'yes'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases, schema = load_cases(args.cases)
    started = time.monotonic()
    rows: list[Row] = []
    plan = [(level, False) for level in args.concurrency]
    if args.compare_to_stable:
        plan += [(level, True) for level in args.concurrency]
    try:
        with running_fake_upstream() as upstream_url:
            for level, compare in plan:
                print(f"concurrency {level}{' with stable' if compare else ''}...", file=sys.stderr,
                      flush=True)
                rows.append(one_row(level, compare, cases, schema, upstream_url, args.latency))
    except (RuntimeError, httpx.HTTPError, ValueError) as error:
        print(f"hack/bench evaluation failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the services are stopped", file=sys.stderr)
        return 130
    report(args, rows, len(cases), time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
