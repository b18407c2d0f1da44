"""Train the character-level GPT on the packaged corpus and write the packaged weights.

    python -m textgen.train                      # the run whose weights ship in the package
    python -m textgen.train --steps 50 --out /tmp/w.safetensors   # a quick smoke run

CPU only; repeatable for a seed on one machine and thread count (torch.manual_seed
plus a seeded batch generator).
The last 10% of the corpus is held out; the final train/validation losses are printed
and stored in the weights file's metadata (``training``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from textgen.model import CharGPT, CharTokenizer, GPTConfig
from textgen.weights import packaged_corpus_path, packaged_weights_path, save_weights


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=packaged_corpus_path())
    parser.add_argument("--out", type=Path, default=packaged_weights_path())
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--eval-every", type=int, default=200)
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "block_size", "threads", "eval_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def learning_rate(step: int, total: int, peak: float) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to 10% of the peak."""
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def get_batch(
    data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, data.numel() - block_size - 1, (batch_size,), generator=generator)
    inputs = torch.stack([data[s : s + block_size] for s in starts.tolist()])
    targets = torch.stack([data[s + 1 : s + block_size + 1] for s in starts.tolist()])
    return inputs, targets


@torch.no_grad()
def estimate_loss(
    model: CharGPT, data: torch.Tensor, block_size: int, batches: int = 8, batch_size: int = 32
) -> float:
    """Mean loss over a fixed set of windows (seeded), so successive estimates are comparable."""
    model.eval()
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(batches):
        inputs, targets = get_batch(data, batch_size, block_size, generator)
        logits = model(inputs)
        losses.append(F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item())
    model.train()
    return sum(losses) / len(losses)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = CharTokenizer.printable_ascii()
    text = args.corpus.read_text(encoding="utf-8")
    unknown = tokenizer.unknown_chars(text)
    if unknown:
        raise SystemExit(f"--corpus {args.corpus}: characters outside printable ASCII: {unknown}")
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    split = int(0.9 * data.numel())
    train_data, val_data = data[:split], data[split:]
    if val_data.numel() <= args.block_size + 1:
        raise SystemExit(f"--corpus {args.corpus} is too small for --block-size {args.block_size}")

    config = GPTConfig(
        vocab_size=tokenizer.vocab_size,
        block_size=args.block_size,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
    )
    model = CharGPT(config)
    # Decay only matrices; biases, layer norms and embeddings' scale stay free (GPT-2 habit).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.99),
    )
    print(
        f"corpus {args.corpus.name}: {len(text)} chars; model {model.num_parameters()} "
        f"parameters; {args.steps} steps of {args.batch_size}x{args.block_size}",
        flush=True,
    )
    batch_generator = torch.Generator().manual_seed(args.seed)
    started = time.monotonic()
    train_loss = float("nan")
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        inputs, targets = get_batch(train_data, args.batch_size, args.block_size, batch_generator)
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        train_loss = loss.item()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            val = estimate_loss(model, val_data, args.block_size)
            print(
                f"step {step + 1:5d}  train loss {train_loss:.4f}  val loss {val:.4f}  "
                f"{time.monotonic() - started:6.1f}s",
                flush=True,
            )

    summary = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "final_train_loss": round(estimate_loss(model, train_data, args.block_size), 4),
        "final_val_loss": round(estimate_loss(model, val_data, args.block_size), 4),
        "seconds": round(time.monotonic() - started, 1),
    }
    model.eval()
    save_weights(args.out, model, tokenizer, summary)
    print(json.dumps(summary))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
