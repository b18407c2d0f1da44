"""A small character-level GPT in plain torch, with naive and key/value-cached decoding.

The network is a decoder-only transformer: token and learned position embeddings, a
stack of pre-norm blocks (layer norm, causal multi-head self-attention, layer norm,
GELU MLP, each with a residual connection), a final layer norm, and an output head
tied to the token embedding (which keeps the shipped weights small).

Decoding comes in two flavours that must produce the same text for the same seed:

* ``naive``: every step runs the whole current context through the network and keeps
  only the last position's logits (quadratic work per generated character);
* ``cached``: a key/value cache keeps every layer's keys and values, so each step feeds
  only the newest character and attends over the cached ones. This is the service's
  decoder, :class:`textgen.engine.BatchDecoder`, with one request; it decodes batches with
  the same text per request. (:class:`KVCache` and ``CharGPT.forward(idx, cache)`` remain
  as the plain reference of cached decoding.)

Choices the design leaves open, written down here:

* **Context policy.** Learned absolute positions mean cached keys cannot be slid by one
  position, so both paths share one policy: the context grows until it holds
  ``block_size`` characters, then it is cut to its last ``block_size // 2`` characters
  (the cached path then refills its cache from those in one pass). Because both paths
  see exactly the same context at every step, their logits agree up to float rounding.
* **Sampling.** Each request draws all its uniforms up front from a ``torch.Generator``
  seeded with the request's seed (always a CPU generator, never the global RNG), and
  step *i* picks the first character whose cumulative probability exceeds uniform *i*
  (inverse-CDF sampling). Both paths therefore consume the random stream identically,
  and the stream is the same on every device.
* **Start of text.** With no prompt, generation starts from a single newline, the
  corpus's paragraph separator. The returned text never includes the prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

DecodeMode = Literal["naive", "cached"]
START_CHAR = "\n"


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the network; stored next to the weights so a loader can rebuild it."""

    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.block_size < 2:
            raise ValueError(f"block_size must be at least 2, got {self.block_size}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class CharTokenizer:
    """Maps characters to ids and back; the vocabulary is the corpus's character set."""

    def __init__(self, chars: Sequence[str]) -> None:
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("the vocabulary must be distinct single characters")
        if START_CHAR not in chars:
            raise ValueError("the vocabulary must contain a newline (the start character)")
        self.chars: tuple[str, ...] = tuple(chars)
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def printable_ascii(cls) -> CharTokenizer:
        """Newline plus the 95 printable ASCII characters.

        A fixed alphabet rather than the corpus's own character set, so that any plain
        ASCII prompt is accepted even if the corpus never used some of its characters
        (their embeddings simply stay near their initial values).
        """
        return cls([START_CHAR, *(chr(code) for code in range(32, 127))])

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of ``text`` outside the vocabulary, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._index))

    def encode(self, text: str) -> list[int]:
        unknown = self.unknown_chars(text)
        if unknown:
            raise ValueError(f"characters outside the vocabulary: {unknown!r}")
        return [self._index[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in ids)


class KVCache:
    """Keys and values of every layer for one sequence, preallocated to ``block_size``."""

    def __init__(self, config: GPTConfig, device: torch.device, dtype: torch.dtype) -> None:
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, 1, config.n_head, config.block_size, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def reset(self) -> None:
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        batch, new_len, channels = x.shape
        q, k, v = self.qkv(x).split(channels, dim=2)
        q, k, v = (t.view(batch, new_len, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        past_len = 0
        if cache is not None:
            past_len = cache.length
            end = past_len + new_len
            cache.keys[layer, :, :, past_len:end] = k
            cache.values[layer, :, :, past_len:end] = v
            k = cache.keys[layer, :, :, :end]
            v = cache.values[layer, :, :, :end]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        if new_len > 1:
            # New position i (absolute past_len + i) may see every key up to itself.
            visible = torch.ones(new_len, past_len + new_len, dtype=torch.bool, device=x.device)
            scores = scores.masked_fill(~visible.tril(diagonal=past_len), float("-inf"))
        out = F.softmax(scores, dim=-1) @ v
        out = out.transpose(1, 2).contiguous().view(batch, new_len, channels)
        projected: torch.Tensor = self.proj(out)
        return projected


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
        )

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        mlp_out: torch.Tensor = self.mlp(self.ln_2(x))
        return x + mlp_out


class CharGPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying: one matrix, half the bytes
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits for every position of ``idx`` (batch, new_len).

        With a cache, ``idx`` holds only the new characters: they take the positions
        after the cached ones, and the cache grows by ``new_len``.
        """
        start = cache.length if cache is not None else 0
        new_len = idx.shape[1]
        if start + new_len > self.config.block_size:
            raise ValueError(f"context of {start + new_len} exceeds block_size {self.config.block_size}")
        positions = torch.arange(start, start + new_len, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(positions)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length += new_len
        logits: torch.Tensor = self.head(self.ln_f(x))
        return logits

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def draw_uniforms(seed: int, count: int) -> torch.Tensor:
    """The request's random stream: ``count`` uniforms from a CPU generator seeded with ``seed``."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return torch.rand(count, generator=generator, dtype=torch.float64)


def _sample(logits: torch.Tensor, temperature: float, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling of one id from the last position's logits (kept on device)."""
    probs = F.softmax(logits.double() / temperature, dim=-1)
    cdf = probs.cumsum(dim=-1)
    # Clamp so that a uniform above the rounded total still picks the last id.
    picked = torch.searchsorted(cdf, uniform.view(1), right=True)
    return picked.clamp_(max=probs.shape[-1] - 1)


@torch.inference_mode()
def generate_ids(
    model: CharGPT,
    prompt_ids: Sequence[int],
    num_chars: int,
    *,
    seed: int,
    temperature: float,
    mode: DecodeMode = "cached",
    start_id: int = 0,
) -> list[int]:
    """Generate ``num_chars`` ids after ``prompt_ids`` (``start_id`` alone when empty)."""
    if num_chars < 0:
        raise ValueError(f"num_chars must be >= 0, got {num_chars}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if mode not in ("naive", "cached"):
        raise ValueError(f"mode must be 'naive' or 'cached', got {mode!r}")
    if mode == "cached":
        # Imported here: the engine builds on this module.
        from textgen.engine import generate_many

        return generate_many(model, [(prompt_ids, num_chars, seed, temperature)], start_id=start_id)[0]
    device = next(model.parameters()).device
    block_size = model.config.block_size
    keep = block_size // 2
    uniforms = draw_uniforms(seed, num_chars).to(device)

    history = torch.tensor(list(prompt_ids) or [start_id], dtype=torch.long, device=device)
    if history.numel() > block_size:
        history = history[-keep:]
    context = history.view(1, -1)
    generated = torch.empty(num_chars, dtype=torch.long, device=device)

    for step in range(num_chars):
        if context.shape[1] >= block_size:
            context = context[:, -keep:]
        # The baseline: the whole context through the network for every character.
        logits = model(context)[:, -1, :]
        next_id = _sample(logits[0], temperature, uniforms[step])
        generated[step] = next_id[0]
        context = torch.cat((context, next_id.view(1, 1)), dim=1)
    return [int(i) for i in generated.tolist()]
