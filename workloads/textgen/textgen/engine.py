"""Fast, batched key/value-cached decoding of :class:`~textgen.model.CharGPT`.

The model is 0.8 M parameters: one decoding step is a few hundred thousand multiply-adds,
which the CPU does in microseconds, so the time goes into Python and into torch's per-op
dispatch. :class:`BatchDecoder` therefore works on *lanes* and keeps the op count per step
small:

* the weights are copied once, in the layouts the step needs (transposed, q/k/v fused in one
  matrix with the 1/sqrt(head_dim) folded into q, keys stored transposed), and the
  functional ops are called directly;
* the key/value cache and the attention mask are preallocated for every lane and written in
  place (no ``torch.cat`` per step); each lane has its own position;
* a step decodes the busy lanes together (lanes are taken lowest first, so they are a
  prefix), and no op mixes rows: each linear layer is a batched product of one-row
  matrices (see :meth:`BatchDecoder._linear`) and each (lane, head) attends over the whole
  ``block_size`` with a mask, so every product a row goes through has the same shape
  whatever the batch holds. That is what makes a request's text independent of its batch:
  a product's rounding depends on its shapes (BLAS picks kernels by size), never on the
  values of other rows.
* A request's first step, and each refill when its context reaches ``block_size``
  characters, runs its characters through the network *alone* (a prefill), so that result
  too depends only on the request.

Sampling is that of :func:`textgen.model.generate_ids` (which uses this class for its
``cached`` mode): inverse-CDF in float64 on the request's own uniforms, drawn up front from a
CPU generator seeded with its seed, so the random stream never depends on the batch either.
Together: a request's text depends on its seed, temperature, prompt and length, on the
device and torch build, never on which requests it shares steps with (or in which lane).

Not thread-safe: one thread drives a decoder (see :mod:`textgen.batcher`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from textgen.model import Block, CharGPT, draw_uniforms

# Lanes of a decoder when nobody says otherwise, and TEXTGEN_MAX_BATCH_SIZE's default: 8
# requests decode in about 2-3 times one request's step time on 2 CPU cores.
DEFAULT_LANES = 8

Tag = TypeVar("Tag")


@dataclass
class _Layer:
    ln_1: tuple[torch.Tensor, torch.Tensor]
    qkv_t: torch.Tensor  # (C, 3C): [q * scale | head 0 k, head 0 v | head 1 k, head 1 v | ...]
    qkv_b: torch.Tensor
    proj_t: torch.Tensor
    proj_b: torch.Tensor
    ln_2: tuple[torch.Tensor, torch.Tensor]
    fc_t: torch.Tensor
    fc_b: torch.Tensor
    out_t: torch.Tensor
    out_b: torch.Tensor


@dataclass
class _Lane(Generic[Tag]):
    """One request in a lane: what the host needs to know about it, in Python values."""

    tag: Tag
    num_chars: int
    temperature: float
    uniforms: list[float]
    context: list[int]  # the characters the model currently sees (for the next refill)
    generated: list[int] = field(default_factory=list)
    needs_prefill: bool = True


class BatchDecoder(Generic[Tag]):
    """Decodes up to ``lanes`` requests together, one character each per :meth:`step`.

    ``add`` puts a request in a free lane (it starts at the next step); ``step`` advances
    every request by one character and returns those that are complete, with their tags;
    ``drop`` frees a lane early. Each request's ids equal what it would get alone.
    """

    def __init__(self, model: CharGPT, lanes: int = DEFAULT_LANES) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, got {lanes}")
        config = model.config
        self.config = config
        self.lanes = lanes
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.block_size = config.block_size
        first = next(model.parameters())
        self.device = first.device
        dtype = first.dtype
        # Plain tensors, not inference tensors: add() and drop() write them outside inference mode.
        with torch.no_grad():
            self._copy_weights(model)
            lanes_, heads, block, dim = lanes, self.n_head, self.block_size, self.head_dim
            # Keys stored transposed (dim before position) and values as they are: the layouts
            # the two attention products read fastest.
            layers = config.n_layer
            self.keys_t = torch.zeros((layers, lanes_, heads, dim, block), device=self.device, dtype=dtype)
            self.values = torch.zeros((layers, lanes_, heads, block, dim), device=self.device, dtype=dtype)
            # Additive attention mask, 0 where a lane may look and -inf elsewhere; position 0 is
            # always open so an idle lane never takes a softmax over nothing (NaN).
            self.mask = torch.full((lanes_, heads, 1, block), float("-inf"), device=self.device, dtype=dtype)
            self.mask[..., 0] = 0.0
            self.causal = torch.full((block, block), float("-inf"), device=self.device, dtype=dtype).triu(1)
            # Per-lane position, repeated per head so that it indexes the cache and the mask directly.
            self.pos = torch.zeros((lanes_, heads), dtype=torch.long, device=self.device)
            self.busy = torch.zeros((lanes_, heads), dtype=torch.long, device=self.device)
            self.ids = torch.zeros(lanes_, dtype=torch.long, device=self.device)
            self.temperatures = torch.ones((lanes_, 1), dtype=torch.float64, device=self.device)
            self.lane_index = torch.arange(lanes_, device=self.device).view(lanes_, 1)
            self.head_index = torch.arange(heads, device=self.device).view(1, heads)
            self.zero = torch.zeros((), device=self.device, dtype=dtype)
        self._slots: list[_Lane[Tag] | None] = [None] * lanes
        self._idle_uniform = 0.5
        self._fast_single_row = False
        self._fast_single_row = self._one_row_product_is_batch_invariant()

    def _copy_weights(self, model: CharGPT) -> None:
        c, heads, dim = model.config.n_embd, self.n_head, self.head_dim
        scale = 1.0 / math.sqrt(dim)

        def interleave_kv(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            # (C, ...) rows of k and v, grouped per head as [k_h; v_h].
            rest = k.shape[1:]
            stacked = torch.stack((k.reshape(heads, dim, *rest), v.reshape(heads, dim, *rest)), dim=1)
            return stacked.reshape(2 * c, *rest)

        self.layers: list[_Layer] = []
        for block in model.blocks:
            assert isinstance(block, Block)
            w, b = block.attn.qkv.weight.detach(), block.attn.qkv.bias.detach()
            qkv_w = torch.cat((w[:c] * scale, interleave_kv(w[c : 2 * c], w[2 * c :])))
            qkv_b = torch.cat((b[:c] * scale, interleave_kv(b[c : 2 * c], b[2 * c :])))
            fc, out = block.mlp[0], block.mlp[2]
            assert isinstance(fc, nn.Linear) and isinstance(out, nn.Linear)
            self.layers.append(
                _Layer(
                    ln_1=(block.ln_1.weight.detach().clone(), block.ln_1.bias.detach().clone()),
                    qkv_t=qkv_w.t().contiguous(),
                    qkv_b=qkv_b.contiguous(),
                    proj_t=block.attn.proj.weight.detach().t().contiguous(),
                    proj_b=block.attn.proj.bias.detach().clone(),
                    ln_2=(block.ln_2.weight.detach().clone(), block.ln_2.bias.detach().clone()),
                    fc_t=fc.weight.detach().t().contiguous(),
                    fc_b=fc.bias.detach().clone(),
                    out_t=out.weight.detach().t().contiguous(),
                    out_b=out.bias.detach().clone(),
                )
            )
        self.tok_emb = model.tok_emb.weight.detach().clone()
        self.pos_emb = model.pos_emb.weight.detach().clone()
        self.ln_f = (model.ln_f.weight.detach().clone(), model.ln_f.bias.detach().clone())
        self.head_t = model.head.weight.detach().t().contiguous()
        self.eps = model.ln_f.eps

    # --- the host side --------------------------------------------------------------------

    @property
    def free_lanes(self) -> int:
        return self._slots.count(None)

    @property
    def active(self) -> int:
        return self.lanes - self.free_lanes

    def add(
        self,
        tag: Tag,
        prompt_ids: Sequence[int],
        num_chars: int,
        *,
        seed: int,
        temperature: float,
        start_id: int = 0,
    ) -> None:
        """Start a request in a free lane; its first character comes with the next step."""
        if num_chars < 1:
            raise ValueError(f"num_chars must be >= 1, got {num_chars}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        lane = self._slots.index(None) if None in self._slots else -1
        if lane < 0:
            raise RuntimeError("no free lane")
        context = list(prompt_ids) or [start_id]
        if len(context) > self.block_size:
            context = context[-(self.block_size // 2) :]
        self._slots[lane] = _Lane(
            tag=tag,
            num_chars=num_chars,
            temperature=temperature,
            uniforms=draw_uniforms(seed, num_chars).tolist(),
            context=context,
        )
        self.temperatures[lane, 0] = temperature

    def tags(self) -> list[Tag]:
        """The tags of the requests in the lanes."""
        return [slot.tag for slot in self._slots if slot is not None]

    def drop(self, tag: Tag) -> bool:
        """Free the lane of the request tagged ``tag`` (its client left); False if none."""
        for lane, slot in enumerate(self._slots):
            if slot is not None and slot.tag == tag:
                self._free(lane)
                return True
        return False

    def reset(self) -> list[Tag]:
        """Free every lane (after an error); returns the tags that were in them."""
        tags = [slot.tag for slot in self._slots if slot is not None]
        for lane, slot in enumerate(self._slots):
            if slot is not None:
                self._free(lane)
        return tags

    def _free(self, lane: int) -> None:
        self._slots[lane] = None
        self.busy[lane] = 0
        self.pos[lane] = 0  # an idle lane decodes at position 0, which its mask always opens

    def step(self) -> list[tuple[Tag, list[int]]]:
        """One character for every request; returns the finished ones with their ids."""
        slots = self._slots
        if not self.active:
            return []
        block = self.block_size
        prefills: list[int] = []
        for lane, slot in enumerate(slots):
            if slot is None:
                continue
            if len(slot.context) >= block:
                # Learned absolute positions cannot slide: keep the last half and refill.
                slot.context = slot.context[-(block // 2) :]
                slot.needs_prefill = True
            if slot.needs_prefill:
                prefills.append(lane)
        # Lanes are taken lowest first, so the busy ones are (nearly) a prefix: decode just that.
        rows = max(lane for lane, slot in enumerate(slots) if slot is not None) + 1
        with torch.inference_mode():
            logits = self._decode(rows)
            # Every busy lane's next character goes one position further; prefilled lanes
            # are repositioned below.
            self.pos.add_(self.busy)
            for lane in prefills:
                slot = slots[lane]
                assert slot is not None
                logits[lane] = self._prefill(lane, slot.context)[0]
                slot.needs_prefill = False
            uniforms = [
                slot.uniforms[len(slot.generated)] if slot is not None else self._idle_uniform
                for slot in slots[:rows]
            ]
            picked = self._sample(logits, uniforms)
            self.ids[:rows] = picked
            picked_ids: list[int] = picked.tolist()
        finished: list[tuple[Tag, list[int]]] = []
        for lane, slot in enumerate(slots):
            if slot is None:
                continue
            next_id = picked_ids[lane]
            slot.generated.append(next_id)
            slot.context.append(next_id)
            if len(slot.generated) == slot.num_chars:
                finished.append((slot.tag, slot.generated))
                self._free(lane)
        return finished

    # --- the device side ------------------------------------------------------------------

    def _linear(self, x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x @ weight_t + bias``, each row computed as its own one-row product.

        One (rows, K) product would be cheaper, but its rounding depends on ``rows`` (BLAS
        picks a kernel by size), so a request's text would depend on its batch. A batched
        product of one-row matrices runs the same one-row kernel for every row, whatever the
        count. A lone row takes the plain product when start-up showed it to be the same
        kernel (:meth:`_one_row_product_is_batch_invariant`), which saves the batched call's
        overhead in the common single-request case.
        """
        rows = x.shape[0]
        if rows == 1 and self._fast_single_row:
            return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)
        w = weight_t.expand(rows, *weight_t.shape)
        if bias is None:
            return torch.bmm(x.view(rows, 1, -1), w).view(rows, -1)
        return torch.baddbmm(bias.expand(rows, 1, bias.shape[0]), x.view(rows, 1, -1), w).view(rows, -1)

    def _one_row_product_is_batch_invariant(self) -> bool:
        """Whether a plain one-row product equals a row of the batched one, bit for bit, here.

        Kernels are chosen by shape and never by value, so one random probe per weight shape
        settles it for this device and torch build.
        """
        generator = torch.Generator(device="cpu").manual_seed(0)
        weights = [self.head_t, *(t for w in self.layers[:1] for t in (w.qkv_t, w.proj_t, w.fc_t, w.out_t))]
        with torch.inference_mode():
            for weight_t in weights:
                probe = torch.randn((3, weight_t.shape[0]), generator=generator).to(weight_t)
                batched = torch.bmm(probe.view(3, 1, -1), weight_t.expand(3, *weight_t.shape))
                alone = torch.stack([torch.mm(probe[i : i + 1], weight_t)[0] for i in range(3)])
                if not torch.equal(batched.view(3, -1), alone):
                    return False
                bias = weight_t[0]
                batched = torch.baddbmm(
                    bias.expand(3, 1, bias.shape[0]),
                    probe.view(3, 1, -1),
                    weight_t.expand(3, *weight_t.shape),
                )
                alone = torch.stack([torch.addmm(bias, probe[i : i + 1], weight_t)[0] for i in range(3)])
                if not torch.equal(batched.view(3, -1), alone):
                    return False
        return True

    def _decode(self, rows: int) -> torch.Tensor:
        """Logits (rows, vocab) for the current id of each of the first ``rows`` lanes."""
        heads, dim, block = self.n_head, self.head_dim, self.block_size
        pos = self.pos[:rows]
        where = (self.lane_index[:rows], self.head_index, pos)
        self.mask[:rows].view(rows, heads, block).index_put_(where, self.zero)
        mask = self.mask[:rows].view(rows * heads, 1, block)
        x = self.tok_emb[self.ids[:rows]] + self.pos_emb[pos[:, 0]]
        linear = self._linear
        for layer, w in enumerate(self.layers):
            h = F.layer_norm(x, x.shape[-1:], *w.ln_1, self.eps)
            qkv = linear(h, w.qkv_t, w.qkv_b)
            c = x.shape[1]
            new_kv = qkv[:, c:].view(rows, heads, 2, dim)
            keys_t, values = self.keys_t[layer, :rows], self.values[layer, :rows]
            keys_t.transpose(2, 3).index_put_(where, new_kv[:, :, 0])
            values.index_put_(where, new_kv[:, :, 1])
            q = qkv[:, :c].reshape(rows * heads, 1, dim)
            # One small product per (lane, head), each over the whole block_size (masked), so
            # the shapes of a lane's products never depend on the other lanes.
            scores = torch.baddbmm(mask, q, keys_t.view(rows * heads, dim, block))
            attended = torch.bmm(F.softmax(scores, dim=-1), values.view(rows * heads, block, dim))
            x = x + linear(attended.view(rows, c), w.proj_t, w.proj_b)
            h = F.layer_norm(x, x.shape[-1:], *w.ln_2, self.eps)
            x = x + linear(F.gelu(linear(h, w.fc_t, w.fc_b)), w.out_t, w.out_b)
        return linear(F.layer_norm(x, x.shape[-1:], *self.ln_f, self.eps), self.head_t, None)

    def _prefill(self, lane: int, context: Sequence[int]) -> torch.Tensor:
        """Run ``context`` through the network alone into ``lane``'s cache; last logits (1, vocab)."""
        heads, dim = self.n_head, self.head_dim
        length = len(context)
        ids = torch.tensor(context, dtype=torch.long, device=self.device)
        x = self.tok_emb[ids] + self.pos_emb[:length]
        causal = self.causal[:length, :length]
        for layer, w in enumerate(self.layers):
            h = F.layer_norm(x, x.shape[-1:], *w.ln_1, self.eps)
            qkv = torch.addmm(w.qkv_b, h, w.qkv_t)
            c = x.shape[1]
            kv = qkv[:, c:].view(length, heads, 2, dim)
            keys, values = kv[:, :, 0].transpose(0, 1), kv[:, :, 1].transpose(0, 1)  # (heads, length, dim)
            self.keys_t[layer, lane, :, :, :length] = keys.transpose(1, 2)
            self.values[layer, lane, :, :length] = values
            q = qkv[:, :c].view(length, heads, dim).transpose(0, 1)
            scores = torch.baddbmm(causal, q, keys.transpose(1, 2))
            attended = torch.bmm(F.softmax(scores, dim=-1), values)
            attended = attended.transpose(0, 1).reshape(length, c)
            x = x + torch.addmm(w.proj_b, attended, w.proj_t)
            h = F.layer_norm(x, x.shape[-1:], *w.ln_2, self.eps)
            x = x + torch.addmm(w.out_b, F.gelu(torch.addmm(w.fc_b, h, w.fc_t)), w.out_t)
        # The lane's next character goes at position ``length``; it sees 0..length from then on.
        self.mask[lane] = float("-inf")
        self.mask[lane, ..., :length] = 0.0
        self.pos[lane] = length
        self.busy[lane] = 1
        last = x[-1:]
        return torch.mm(F.layer_norm(last, last.shape[-1:], *self.ln_f, self.eps), self.head_t)

    def _sample(self, logits: torch.Tensor, uniforms: list[float]) -> torch.Tensor:
        """Inverse-CDF sampling per lane, in float64, as :func:`textgen.model._sample` does."""
        probs = F.softmax(logits.double() / self.temperatures[: logits.shape[0]], dim=-1)
        cdf = probs.cumsum(dim=-1)
        values = torch.tensor(uniforms, dtype=torch.float64, device=self.device).view(-1, 1)
        # Clamp so that a uniform above the rounded total still picks the last id.
        picked = torch.searchsorted(cdf, values, right=True).clamp_(max=cdf.shape[-1] - 1)
        return picked.view(-1)


def generate_many(
    model: CharGPT,
    requests: Sequence[tuple[Sequence[int], int, int, float]],
    *,
    lanes: int = DEFAULT_LANES,
    start_id: int = 0,
) -> list[list[int]]:
    """Decode ``(prompt_ids, num_chars, seed, temperature)`` requests, up to ``lanes`` at once.

    A request joins as soon as a lane is free; the results come back in the order asked.
    """
    decoder: BatchDecoder[int] = BatchDecoder(model, lanes)
    results: list[list[int]] = [[] for _ in requests]
    waiting = [index for index, request in enumerate(requests) if request[1] > 0]
    waiting.reverse()
    while waiting or decoder.active:
        while waiting and decoder.free_lanes:
            index = waiting.pop()
            prompt_ids, num_chars, seed, temperature = requests[index]
            decoder.add(index, prompt_ids, num_chars, seed=seed, temperature=temperature, start_id=start_id)
        for index, ids in decoder.step():
            results[index] = ids
    return results
