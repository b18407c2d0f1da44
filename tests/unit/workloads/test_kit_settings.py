"""modelkit settings validation and the price table."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from modelkit import ConfigurationError, ServiceMetrics, ServiceSettings, parse_settings, price_for
from modelkit.pricing import cost_usd
from modelkit.testing import parse_metrics
from prometheus_client import generate_latest


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({"PORT": "eighty"}, "PORT", id="a port that is not a number names PORT"),
        pytest.param({"PORT": "70000"}, "PORT", id="a port out of range names PORT"),
        pytest.param({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", id="an unknown log level names LOG_LEVEL"),
        pytest.param({"MAX_REQUEST_BYTES": "0"}, "MAX_REQUEST_BYTES",
                     id="a zero size limit names MAX_REQUEST_BYTES"),
    ],
)  # fmt: skip
def test_bad_env_var_exits_non_zero_naming_it_before_binding(env: dict[str, str], variable: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fakeupstream"],
        env={**os.environ, "HOST": "127.0.0.1", "PORT": "1", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Uvicorn running" not in result.stderr


def test_parse_settings_reads_env_case_insensitively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("API_KEY", "")
    settings = parse_settings(ServiceSettings)
    assert settings.log_level == "DEBUG"
    assert settings.api_key is None


def test_parse_settings_raises_a_configuration_error_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="PORT"):
        parse_settings(ServiceSettings, port="x")


@pytest.mark.parametrize(
    ("model", "input_price", "output_price"),
    [
        pytest.param("gpt-4o-mini", 0.15, 0.60, id="a base model has its list price"),
        pytest.param("gpt-4o-mini-2024-07-18", 0.15, 0.60, id="a dated snapshot is its family"),
        pytest.param("ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v1", 0.30, 1.20,
                     id="a fine-tuned gpt-4o-mini has the fine-tuned price"),
        pytest.param("ft:gpt-4o-2024-08-06:acme::abc", 3.75, 15.00,
                     id="a fine-tune of another known base has that base's fine-tuned price"),
        pytest.param("ft:o3-mini:acme:x:1", 1.10, 4.40,
                     id="a fine-tune whose base has no fine-tuned price falls back to the base"),
    ],
)  # fmt: skip
def test_price_for_resolves_fine_tunes_by_their_base(
    model: str, input_price: float, output_price: float
) -> None:
    price = price_for(model)
    assert price is not None
    assert (price.input_per_million, price.output_per_million) == (input_price, output_price)


def test_unknown_model_has_no_price_and_counts_tokens_but_not_cost() -> None:
    assert price_for("my-local-llama") is None
    assert cost_usd("ft:my-local-llama:x:y:z", 10, 10) is None
    metrics = ServiceMetrics()
    assert metrics.record_usage("my-local-llama", 100, 50) is None
    samples = parse_metrics(generate_latest(metrics.registry).decode())
    assert samples.value("model_tokens_total", model="my-local-llama", direction="input") == 100
    assert not samples.has("model_cost_usd_total", model="my-local-llama")


def test_record_usage_counts_tokens_and_cost() -> None:
    metrics = ServiceMetrics()
    cost = metrics.record_usage("gpt-4o-mini", 1_000_000, 500_000)
    assert cost == pytest.approx(0.15 + 0.30)
    samples = parse_metrics(generate_latest(metrics.registry).decode())
    assert samples.value("model_tokens_total", model="gpt-4o-mini", direction="output") == 500_000
    assert samples.value("model_cost_usd_total", model="gpt-4o-mini") == pytest.approx(0.45)
