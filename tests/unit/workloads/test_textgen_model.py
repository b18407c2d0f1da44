"""textgen's model, decoding, weights and settings, in-process (no server)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from modelkit.settings import ConfigurationError, parse_settings
from textgen.model import CharGPT, CharTokenizer, DecodeMode, GPTConfig, generate_ids
from textgen.service import TextgenSettings
from textgen.weights import (
    LoadedModel,
    WeightsError,
    load_weights,
    packaged_weights_path,
    save_weights,
)

MAX_WEIGHTS_BYTES = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    torch.set_num_threads(1)
    return load_weights()


def generate(
    loaded: LoadedModel,
    *,
    seed: int,
    num_chars: int = 40,
    prompt: str = "",
    temperature: float = 1.0,
    mode: DecodeMode = "cached",
) -> str:
    ids = generate_ids(
        loaded.model,
        loaded.tokenizer.encode(prompt),
        num_chars,
        seed=seed,
        temperature=temperature,
        mode=mode,
        start_id=loaded.tokenizer.encode("\n")[0],
    )
    return loaded.tokenizer.decode(ids)


# --- determinism ----------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_text(loaded: LoadedModel) -> None:
    first = generate(loaded, seed=42, prompt="The ")
    second = generate(loaded, seed=42, prompt="The ")
    assert first == second
    assert len(first) == 40


def test_the_global_rng_does_not_change_the_text(loaded: LoadedModel) -> None:
    torch.manual_seed(1)
    first = generate(loaded, seed=42)
    torch.manual_seed(2)
    torch.rand(100)
    assert generate(loaded, seed=42) == first


def test_different_seeds_give_different_texts(loaded: LoadedModel) -> None:
    texts = {generate(loaded, seed=seed) for seed in range(5)}
    assert len(texts) == 5


@pytest.mark.parametrize(
    ("prompt", "num_chars", "temperature"),
    [
        pytest.param("", 30, 1.0, id="an empty prompt decodes the same both ways"),
        pytest.param("The river ", 30, 0.5, id="a short prompt at low temperature decodes the same"),
        pytest.param("", 300, 1.0, id="a text longer than the context window decodes the same"),
        pytest.param("a" * 200, 20, 1.5, id="a prompt longer than the context window decodes same"),
        pytest.param("x" * 127, 5, 1.0, id="a prompt one short of the window decodes the same"),
    ],
)
def test_cached_and_naive_decoding_give_the_same_text(
    loaded: LoadedModel, prompt: str, num_chars: int, temperature: float
) -> None:
    naive = generate(
        loaded, seed=9, prompt=prompt, num_chars=num_chars, temperature=temperature, mode="naive"
    )
    cached = generate(
        loaded, seed=9, prompt=prompt, num_chars=num_chars, temperature=temperature, mode="cached"
    )
    assert cached == naive
    assert len(cached) == num_chars


def test_the_cached_step_matches_the_full_forward_pass_logits(loaded: LoadedModel) -> None:
    """The cache's per-step logits equal the full pass's, position by position."""
    from textgen.model import KVCache

    model = loaded.model
    ids = torch.tensor([loaded.tokenizer.encode("The lighthouse stood")])
    with torch.inference_mode():
        full = model(ids)
        cache = KVCache(model.config, torch.device("cpu"), torch.float32)
        prefix = model(ids[:, :5], cache)
        steps = [model(ids[:, i : i + 1], cache) for i in range(5, ids.shape[1])]
    stepped = torch.cat([prefix, *steps], dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-4)


def test_the_model_writes_mostly_letters_and_spaces(loaded: LoadedModel) -> None:
    """A trained model, not random weights: its text looks like the corpus's prose."""
    text = generate(loaded, seed=3, num_chars=200, temperature=0.8)
    plain = sum(c.isalpha() or c in " \n.," for c in text)
    assert plain / len(text) > 0.9, text


# --- weights --------------------------------------------------------------------------------


def test_the_packaged_weights_are_at_most_5_mb_and_load() -> None:
    path = packaged_weights_path()
    assert path.stat().st_size <= MAX_WEIGHTS_BYTES
    loaded = load_weights(path)
    assert loaded.model.config.vocab_size == loaded.tokenizer.vocab_size
    assert not loaded.model.training
    assert loaded.training["final_train_loss"] > 0


def test_the_weights_load_and_generate_with_the_network_cut_off() -> None:
    """In a fresh interpreter where opening any socket raises, loading still works."""
    script = textwrap.dedent(
        """
        import socket

        class NoNetwork(socket.socket):
            def __init__(self, *args, **kwargs):
                raise OSError("network access attempted")

        socket.socket = NoNetwork
        socket.create_connection = NoNetwork
        from textgen.weights import load_weights
        from textgen.model import generate_ids
        loaded = load_weights()
        print(len(generate_ids(loaded.model, [], 5, seed=1, temperature=1.0)))
        """
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "5"


def test_saved_weights_round_trip_to_the_same_outputs(tmp_path: Path) -> None:
    tokenizer = CharTokenizer.printable_ascii()
    torch.manual_seed(0)
    model = CharGPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1,
                              n_head=2, n_embd=16))  # fmt: skip
    model.eval()
    path = tmp_path / "tiny.safetensors"
    save_weights(path, model, tokenizer, {"steps": 0})
    reloaded = load_weights(path)
    ids = torch.tensor([tokenizer.encode("hello")])
    with torch.inference_mode():
        torch.testing.assert_close(reloaded.model(ids), model(ids))
    # The output head is tied to the token embedding after loading, as in training.
    assert reloaded.model.head.weight is reloaded.model.tok_emb.weight
    assert reloaded.training == {"steps": 0}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "does not exist", id="a missing weights file is named with the fix"),
        pytest.param(b"not a model", "is not a safetensors file", id="a non-safetensors file"),
    ],
)
def test_bad_weights_files_give_clear_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "weights.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=message) as info:
        load_weights(path)
    assert str(path) in str(info.value)


def test_a_safetensors_file_from_another_model_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "something-else"})
    with pytest.raises(WeightsError, match="format 'something-else'"):
        load_weights(path)


# --- bad inputs to the library ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"num_chars": -1}, "num_chars must be >= 0", id="negative num_chars"),
        pytest.param({"temperature": 0.0}, "temperature must be > 0", id="zero temperature"),
        pytest.param({"mode": "fast"}, "mode must be 'naive' or 'cached'", id="an unknown mode"),
    ],
)
def test_generate_ids_rejects_bad_arguments_by_name(
    loaded: LoadedModel, kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"num_chars": 3, "seed": 1, "temperature": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_ids(loaded.model, [], **arguments)  # type: ignore[arg-type]


def test_the_tokenizer_names_unknown_characters() -> None:
    tokenizer = CharTokenizer.printable_ascii()
    assert tokenizer.unknown_chars("caf\u00e9 \u00e9\t") == ["\u00e9", "\t"]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.encode("\u00e9")
    assert tokenizer.decode(tokenizer.encode("Hi!\n")) == "Hi!\n"


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        pytest.param({"textgen_max_chars": 0}, "TEXTGEN_MAX_CHARS", id="max chars of zero"),
        pytest.param({"textgen_device": "tpu"}, "TEXTGEN_DEVICE", id="an unknown device"),
        pytest.param(
            {"textgen_weights": "/nonexistent/w.safetensors"},
            "TEXTGEN_WEIGHTS",
            id="a weights path that does not exist",
        ),
    ],
)
def test_bad_settings_name_the_variable(overrides: dict[str, object], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        parse_settings(TextgenSettings, **overrides)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"TEXTGEN_DEVICE: .*use auto"):
        parse_settings(TextgenSettings, textgen_device="cuda")


def test_auto_device_picks_the_gpu_only_when_present() -> None:
    settings = parse_settings(TextgenSettings, textgen_device="AUTO")
    assert settings.device().type == ("cuda" if torch.cuda.is_available() else "cpu")


# --- batched decoding -----------------------------------------------------------------------

# Different seeds, temperatures, lengths and prompts, including ones that refill the context
# (longer than the window, a prompt at the window's edge) part-way through a batch.
BATCHED_REQUESTS = [
    ("", 50, 1, 1.0),
    ("The ", 130, 2, 0.7),
    ("", 7, 3, 1.5),
    ("a" * 140, 90, 4, 0.9),
    ("x", 200, 5, 1.2),
    ("", 60, 6, 0.3),
    ("Hello", 33, 7, 1.0),
    ("y" * 128, 150, 8, 2.0),
    ("", 40, 9, 1.0),
    ("The river ", 41, 10, 0.8),
]


def encoded(loaded: LoadedModel) -> list[tuple[list[int], int, int, float]]:
    return [(loaded.tokenizer.encode(p), n, seed, t) for p, n, seed, t in BATCHED_REQUESTS]


def test_batched_decoding_gives_each_request_the_text_it_gets_alone(loaded: LoadedModel) -> None:
    """More requests than lanes: some join mid-batch as others finish; none changes text."""
    from textgen.engine import generate_many

    requests = encoded(loaded)
    start_id = loaded.tokenizer.encode("\n")[0]
    alone = [generate_many(loaded.model, [r], start_id=start_id)[0] for r in requests]
    assert generate_many(loaded.model, requests, start_id=start_id) == alone
    assert generate_many(loaded.model, requests[::-1], start_id=start_id)[::-1] == alone
    assert generate_many(loaded.model, requests, lanes=3, start_id=start_id) == alone
    # generate_ids's cached path is the same decoder, one request at a time.
    assert alone[1] == loaded.tokenizer.encode(
        generate(loaded, seed=2, prompt="The ", num_chars=130, temperature=0.7)
    )


def test_batched_logits_are_bit_for_bit_those_of_each_request_alone(loaded: LoadedModel) -> None:
    """Stronger than equal texts (sampling hides tiny differences): every logit of every step
    is the same float whatever the batch, so no seed can ever sample differently."""
    from textgen.engine import BatchDecoder

    class Recording(BatchDecoder[int]):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.seen: dict[int, list[torch.Tensor]] = {}

        def _sample(self, logits: torch.Tensor, uniforms: list[float]) -> torch.Tensor:
            for lane, slot in enumerate(self._slots[: logits.shape[0]]):
                if slot is not None:
                    self.seen.setdefault(slot.tag, []).append(logits[lane].clone())
            return super()._sample(logits, uniforms)

    def run(indices: list[int]) -> dict[int, list[torch.Tensor]]:
        decoder = Recording(loaded.model, 4)
        requests = encoded(loaded)
        waiting = list(indices)
        while waiting or decoder.active:
            while waiting and decoder.free_lanes:
                index = waiting.pop(0)
                prompt_ids, num_chars, seed, temperature = requests[index]
                decoder.add(index, prompt_ids, num_chars, seed=seed, temperature=temperature)
            decoder.step()
        return decoder.seen

    together = run([0, 1, 2, 3, 4, 5, 6, 7])
    for index in range(8):
        [alone] = run([index]).values()
        assert len(together[index]) == len(alone) == BATCHED_REQUESTS[index][1]
        for step, (batched_row, alone_row) in enumerate(zip(together[index], alone, strict=True)):
            assert torch.equal(batched_row, alone_row), (index, step)


def test_the_batcher_decodes_concurrent_submissions_as_each_alone(loaded: LoadedModel) -> None:
    from textgen.batcher import Batcher, RequestStopped
    from textgen.engine import generate_many

    requests = encoded(loaded)
    alone = [generate_many(loaded.model, [r])[0] for r in requests]

    class StopAfter:
        def __init__(self, steps: int) -> None:
            self.limit = steps
            self.steps = 0

        def should_stop(self) -> bool:
            return self.steps >= self.limit

    stopped: list[int] = []
    batcher = Batcher(
        loaded.model, max_batch_size=4, window_s=0.01, on_stopped=lambda stop, n: stopped.append(n)
    )
    try:
        doomed = batcher.submit([], 1000, seed=1, temperature=1.0, stop=StopAfter(20))
        futures = [
            batcher.submit(p, n, seed=seed, temperature=t) for p, n, seed, t in requests
        ]
        assert [f.result(timeout=120) for f in futures] == alone
        # A stopped request leaves its lane part-way; the others were not disturbed.
        with pytest.raises(RequestStopped):
            doomed.result(timeout=120)
        assert stopped == [1000]
    finally:
        batcher.close()
