"""Characters/s of naive vs key/value-cached decoding of the textgen model, and of batching.

    hack/bench textgen                          # CPU, lengths 200 and 1000; 1 vs 8 requests
    hack/bench textgen --device cuda            # the same on an NVIDIA GPU
    hack/bench textgen --lengths 100,500,2000 --repeats 5 --threads 2
    hack/bench textgen --concurrency 16 --batch-chars 500

First table, one request: both decoding paths of ``generate_ids`` (naive: the whole
context through the network per character, the baseline; cached: the decoder the service
uses) on the packaged weights with the same seed, prompt and temperature.

Second table, the service's path: requests sent together to a ``Batcher`` (the service's
worker, with TEXTGEN_MAX_BATCH_SIZE = --concurrency and its default window) from an
asyncio event loop, as the HTTP route does; throughput is all requests' characters over the
time until the last one is answered, for 1 request and for --concurrency requests (each
--batch-chars characters, each its own seed and temperature).

Each measurement is run once to warm up, then --repeats times, and the best run counts
(the least disturbed by other work on the machine). The benchmark also checks that both
paths produced the same text, and that every batched request got the text it gets alone,
and says so (exit status 1 if not).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from pathlib import Path

import torch
from textgen.batcher import Batcher
from textgen.model import CharGPT, DecodeMode, generate_ids
from textgen.weights import load_weights

BATCH_WINDOW_S = 0.002  # TEXTGEN_BATCH_WINDOW_MS's default

MODES: tuple[DecodeMode, ...] = ("naive", "cached")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hack/bench textgen", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--lengths", default="200,1000", help="comma-separated numbers of characters to generate"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per (mode, length)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--weights", type=Path, default=None, help="default: the packaged file")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="requests sent together (and the batch size)"
    )
    parser.add_argument("--batch-chars", type=int, default=1000, help="characters per batched request")
    args = parser.parse_args(argv)
    try:
        args.lengths = [int(part) for part in args.lengths.split(",") if part.strip()]
    except ValueError:
        parser.error(f"--lengths must be comma-separated integers, got {args.lengths!r}")
    if not args.lengths or min(args.lengths) < 1:
        parser.error("--lengths needs at least one length, each at least 1")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.batch_chars < 1:
        parser.error("--batch-chars must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
    return args


def timed_run(
    model: CharGPT, mode: DecodeMode, length: int, args: argparse.Namespace
) -> tuple[float, list[int]]:
    if args.device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    ids = generate_ids(model, [], length, seed=args.seed, temperature=args.temperature, mode=mode)
    if args.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, ids


def batched_requests(count: int, args: argparse.Namespace) -> list[tuple[int, float]]:
    """(seed, temperature) of each of ``count`` requests: all different, as real callers'."""
    return [(args.seed + index, 0.6 + 0.1 * (index % 8)) for index in range(count)]


async def send_together(batcher: Batcher, requests: list[tuple[int, float]], chars: int) -> list[list[int]]:
    sends = (batcher.generate([], chars, seed=seed, temperature=temp) for seed, temp in requests)
    return list(await asyncio.gather(*sends))


def batched_rate(
    batcher: Batcher, requests: list[tuple[int, float]], args: argparse.Namespace
) -> tuple[float, list[list[int]]]:
    """Best chars/s (all requests' characters over the time until the last answer) after a warm-up."""
    best = float("inf")
    texts: list[list[int]] = []
    for attempt in range(args.repeats + 1):
        if args.device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        texts = asyncio.run(send_together(batcher, requests, args.batch_chars))
        elapsed = time.perf_counter() - started
        if attempt > 0:  # the first run warms up
            best = min(best, elapsed)
    return len(requests) * args.batch_chars / best, texts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    loaded = load_weights(args.weights, device=args.device)
    model = loaded.model
    device_name = (
        torch.cuda.get_device_name(0) if args.device == "cuda" else platform.machine() or "unknown CPU"
    )
    print(
        f"textgen decoding benchmark: device {args.device} ({device_name}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    config = model.config
    print(
        f"model: {model.num_parameters()} parameters, {config.n_layer} layers, "
        f"{config.n_embd} wide, block_size {config.block_size}; "
        f"best of {args.repeats} after a warm-up\n"
    )
    print("one request (generate_ids):")
    header = f"{'chars':>6}  {'naive chars/s':>14}  {'cached chars/s':>15}  {'cached/naive':>12}"
    print(header)
    print("-" * len(header))
    all_agree = True
    for length in args.lengths:
        rates: dict[DecodeMode, float] = {}
        texts: dict[DecodeMode, list[int]] = {}
        for mode in MODES:
            timed_run(model, mode, length, args)  # warm-up
            seconds = []
            for _ in range(args.repeats):
                elapsed, ids = timed_run(model, mode, length, args)
                seconds.append(elapsed)
            rates[mode] = length / min(seconds)
            texts[mode] = ids
        agree = texts["naive"] == texts["cached"]
        all_agree = all_agree and agree
        print(
            f"{length:>6}  {rates['naive']:>14.1f}  {rates['cached']:>15.1f}  "
            f"{rates['cached'] / rates['naive']:>11.2f}x" + ("" if agree else "  (texts differ!)")
        )
    print(f"\nnaive and cached decoding produced the same text: {'yes' if all_agree else 'NO'}")

    batcher = Batcher(model, max_batch_size=args.concurrency, window_s=BATCH_WINDOW_S)
    try:
        requests = batched_requests(args.concurrency, args)
        single_rate, _ = batched_rate(batcher, requests[:1], args)
        many_rate, batched_texts = batched_rate(batcher, requests, args)
        alone_texts = [
            generate_ids(model, [], args.batch_chars, seed=seed, temperature=temperature)
            for seed, temperature in requests
        ]
    finally:
        batcher.close()
    print(
        f"\nrequests sent together through the service's batcher (max batch {args.concurrency}, "
        f"window {BATCH_WINDOW_S * 1000:g} ms), {args.batch_chars} chars each:"
    )
    header = f"{'requests':>8}  {'chars/s':>10}  {'vs one request':>14}"
    print(header)
    print("-" * len(header))
    for count, rate in ((1, single_rate), (args.concurrency, many_rate)):
        print(f"{count:>8}  {rate:>10.1f}  {rate / single_rate:>13.2f}x")
    batch_agrees = batched_texts == alone_texts
    print(f"\nbatched requests got the text each gets alone: {'yes' if batch_agrees else 'NO'}")
    return 0 if all_agree and batch_agrees else 1


if __name__ == "__main__":
    sys.exit(main())
