"""Characters/s of naive vs key/value-cached decoding of the textgen model, and their ratio.

    hack/bench textgen                          # CPU, lengths 200 and 1000
    hack/bench textgen --device cuda            # the same on an NVIDIA GPU
    hack/bench textgen --lengths 100,500,2000 --repeats 5 --threads 2

Both paths decode the packaged weights with the same seed, prompt and temperature;
each (mode, length) is run once to warm up, then --repeats times, and the best run
counts (the least disturbed by other work on the machine). The benchmark also checks
that both paths produced the same text, and says so.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from textgen.model import CharGPT, DecodeMode, generate_ids
from textgen.weights import load_weights

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
    args = parser.parse_args(argv)
    try:
        args.lengths = [int(part) for part in args.lengths.split(",") if part.strip()]
    except ValueError:
        parser.error(f"--lengths must be comma-separated integers, got {args.lengths!r}")
    if not args.lengths or min(args.lengths) < 1:
        parser.error("--lengths needs at least one length, each at least 1")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
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
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
