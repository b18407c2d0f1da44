"""Saving and loading the model: one safetensors file, no network, no pickle.

The file holds the state dict (without ``head.weight``, which is tied to the token
embedding and rebuilt on load) and, in the safetensors header's string metadata, the
network's shape (``config``), the alphabet (``vocab``), a format tag, and a summary of
the training run (``training``), so the file alone is enough to rebuild the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from textgen.model import CharGPT, CharTokenizer, GPTConfig

WEIGHTS_FORMAT = "textgen-chargpt-v1"
TIED_KEY = "head.weight"


def packaged_weights_path() -> Path:
    """The weights shipped inside the package (textgen/data/weights.safetensors)."""
    return Path(str(resources.files("textgen") / "data" / "weights.safetensors"))


def packaged_corpus_path() -> Path:
    """The training corpus shipped inside the package (textgen/data/corpus.txt)."""
    return Path(str(resources.files("textgen") / "data" / "corpus.txt"))


class WeightsError(RuntimeError):
    """The weights file is missing, unreadable, or not a textgen model."""


@dataclass
class LoadedModel:
    model: CharGPT
    tokenizer: CharTokenizer
    training: dict[str, Any] = field(default_factory=dict)


def save_weights(path: Path, model: CharGPT, tokenizer: CharTokenizer, training: dict[str, Any]) -> None:
    state = {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in model.state_dict().items()
        if name != TIED_KEY
    }
    metadata = {
        "format": WEIGHTS_FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "vocab": json.dumps("".join(tokenizer.chars)),
        "training": json.dumps(training),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    # safetensors creates the file owner-only (0600); a container's non-root user must read it.
    path.chmod(0o644)


def load_weights(path: Path | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model from ``path`` (default: the packaged file) onto ``device``, in eval mode."""
    weights_path = path or packaged_weights_path()
    if not weights_path.is_file():
        raise WeightsError(
            f"weights file {weights_path} does not exist; set TEXTGEN_WEIGHTS to a file "
            "written by `python -m textgen.train`, or unset it to use the packaged weights"
        )
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"weights file {weights_path} is not a safetensors file: {exc}") from exc
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(
            f"weights file {weights_path} has format {metadata.get('format')!r}, expected {WEIGHTS_FORMAT!r}"
        )
    try:
        config = GPTConfig(**json.loads(metadata["config"]))
        tokenizer = CharTokenizer(list(json.loads(metadata["vocab"])))
        training = json.loads(metadata.get("training", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"weights file {weights_path} has bad metadata: {exc}") from exc
    if tokenizer.vocab_size != config.vocab_size:
        raise WeightsError(
            f"weights file {weights_path}: vocab has {tokenizer.vocab_size} characters "
            f"but the config says {config.vocab_size}"
        )
    model = CharGPT(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {TIED_KEY}:
        raise WeightsError(
            f"weights file {weights_path} does not match the network: "
            f"missing {sorted(set(missing) - {TIED_KEY})}, unexpected {sorted(unexpected)}"
        )
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, training=training)
