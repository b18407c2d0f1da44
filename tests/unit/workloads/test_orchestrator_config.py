"""The orchestrator's config.json (a mounted ConfigMap): values take effect, the environment
overrides them, a bad file stops start-up naming the file and the key, and /health shows
the cache, the registered models and where each setting came from."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fakeupstream import FakeUpstreamClient
from modelkit.settings import ConfigurationError
from modelkit.testing import ServiceProcess, running_module, wait_for
from orchestrator.config import (
    CONFIG_FILE_VARIABLE,
    DEFAULT_CONFIG_FILE,
    OrchestratorSettings,
    load_orchestrator_settings,
)

REPO = Path(__file__).resolve().parents[3]
MODELS = ["fake-a=1/2", "fake-b=0.5/1"]


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting of the orchestrator's comes from the test runner's own environment."""
    names = {field.upper() for field in OrchestratorSettings.model_fields} | {CONFIG_FILE_VARIABLE}
    for name in list(os.environ):
        if name.upper() in names:
            monkeypatch.delenv(name)
    return monkeypatch


def write_config(path: Path, document: Any) -> Path:
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


# --- the loader ------------------------------------------------------------------------


def test_file_values_take_effect_and_the_environment_overrides_them(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.json", {
        "ORCH_MODELS": MODELS,
        "ORCH_DISABLED_MODELS": ["fake-b"],
        "ORCH_CACHE_TTL_S": 120,
        "ORCH_CACHE_MAX_ENTRIES": 7,
        "FF_MODEL_SELECTION": True,
        "FF_RESULT_MERGING": False,
    })
    clean_environment.setenv(CONFIG_FILE_VARIABLE, str(config))
    clean_environment.setenv("ORCH_CACHE_MAX_ENTRIES", "5")
    clean_environment.setenv("ff_result_merging", "true")  # the kit reads names in any case

    settings = load_orchestrator_settings()

    assert list(settings.models) == ["fake-a", "fake-b"]
    assert list(settings.enabled_models) == ["fake-a"]
    assert settings.orch_cache_ttl_s == 120
    assert settings.orch_cache_max_entries == 5, "the environment outranks the file"
    assert settings.ff_model_selection is True
    assert settings.ff_result_merging is True, "the environment outranks the file"
    assert settings.ff_validation is True, "a key the file leaves out keeps its default"
    sources = settings.config_sources.by_setting
    assert sources["ORCH_CACHE_TTL_S"] == str(config)
    assert sources["ORCH_CACHE_MAX_ENTRIES"] == "environment"
    assert sources["FF_RESULT_MERGING"] == "environment"
    assert sources["FF_VALIDATION"] == "default"


def test_without_a_config_file_the_environment_alone_configures_the_service(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    clean_environment.setenv(CONFIG_FILE_VARIABLE, "")  # "no file", whatever /etc holds
    clean_environment.setenv("ORCH_MODELS", "gpt-4o-mini")
    settings = load_orchestrator_settings()
    assert list(settings.enabled_models) == ["gpt-4o-mini"]
    assert settings.config_sources.file is None


def test_the_example_mounts_its_config_where_the_service_reads_it_and_keeps_data_on_a_claim(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    manifest = yaml.safe_load((REPO / "examples" / "orchestrator.yaml").read_text())
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {var["name"]: var["value"] for var in container["env"] if "value" in var}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert mounts["config"] == str(DEFAULT_CONFIG_FILE.parent) and "configMap" in volumes["config"]
    assert mounts["data"] == env["ORCH_DATA_DIR"] and "persistentVolumeClaim" in volumes["data"]

    # The ConfigMap's content (examples/orchestrator-config.json) with the example's env.
    example = REPO / "examples" / "orchestrator-config.json"
    clean_environment.setenv(CONFIG_FILE_VARIABLE, str(example))
    for name, value in {**env, **manifest["spec"]["config"]}.items():
        clean_environment.setenv(name, value)
    settings = load_orchestrator_settings()
    assert settings.config_sources.file == example
    assert settings.config_sources.by_setting["ORCH_CACHE_TTL_S"] == str(example)
    assert list(settings.enabled_models) == env["ORCH_MODELS"].split(",")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param('{"ORCH_MODELS": ["gpt-4o"],', r"not valid JSON: .* line 1 column",
                     id="malformed JSON is refused with its line and column"),
        pytest.param(["gpt-4o"], r"one JSON object of settings",
                     id="a file that is not one object is refused"),
        pytest.param({"ORCH_MODELS": "gpt-4o", "FF_VALIDATON": True},
                     r"key 'FF_VALIDATON' is not a setting; did you mean 'FF_VALIDATION'",
                     id="an unknown key is refused with the closest setting"),
        pytest.param({"ORCH_MODELS": "gpt-4o", "ff_validation": True},
                     r"key 'ff_validation' is not a setting; did you mean 'FF_VALIDATION'",
                     id="a key in the wrong case is refused naming the right one"),
        pytest.param({"ORCH_MODELS": "gpt-4o", "FF_VALIDATION": "yes"},
                     r"key 'FF_VALIDATION' must be true or false \(got \"yes\"\)",
                     id="a flag given as a string is refused"),
        pytest.param({"ORCH_MODELS": "gpt-4o", "ORCH_CACHE_TTL_S": "300"},
                     r"key 'ORCH_CACHE_TTL_S' must be a number",
                     id="a number given as a string is refused"),
        pytest.param({"ORCH_MODELS": "gpt-4o", "ORCH_CACHE_MAX_ENTRIES": 10.5},
                     r"key 'ORCH_CACHE_MAX_ENTRIES' must be a whole number",
                     id="a fraction where a count is due is refused"),
        pytest.param({"ORCH_MODELS": [1, 2]}, r"key 'ORCH_MODELS': list items must be model id strings",
                     id="a model list of numbers is refused"),
        pytest.param({"ORCH_MODELS": "gpt-4o", "OPENAI_API_KEY": "sk-x"},
                     r"key 'OPENAI_API_KEY': a secret does not belong in config.json .*secretKeyRef",
                     id="a secret in the ConfigMap is refused"),
        pytest.param({"ORCH_MODELS": "gpt-4o", "ORCH_CACHE_TTL_S": -1},
                     r"key 'ORCH_CACHE_TTL_S': .*greater than or equal to 0 \(got -1\); fix it in the file",
                     id="an out-of-range value is refused naming the key"),
        pytest.param({"ORCH_MODELS": ["unpriced-model"]},
                     r"key 'ORCH_MODELS': .*no price is known for model 'unpriced-model'",
                     id="a model with no known price is refused naming the key"),
        pytest.param({"ORCH_MODELS": MODELS, "ORCH_DISABLED_MODELS": ["fake-c"]},
                     r"key 'ORCH_DISABLED_MODELS': 'fake-c' is not a registered model",
                     id="disabling an unregistered model is refused"),
        pytest.param({"ORCH_MODELS": MODELS, "ORCH_DISABLED_MODELS": ["fake-a", "fake-b"]},
                     r"key 'ORCH_DISABLED_MODELS': every registered model is disabled",
                     id="disabling every model is refused"),
    ],
)
def test_a_bad_config_file_is_refused_naming_the_file_and_the_key(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path, document: Any, expected: str
) -> None:
    config = write_config(tmp_path / "config.json", document)
    clean_environment.setenv(CONFIG_FILE_VARIABLE, str(config))
    with pytest.raises(ConfigurationError) as refused:
        load_orchestrator_settings()
    message = str(refused.value)
    assert message.startswith(str(config)), message
    assert re.search(expected, message), message


def test_a_config_file_named_but_missing_is_refused(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_environment.setenv(CONFIG_FILE_VARIABLE, str(tmp_path / "absent.json"))
    with pytest.raises(ConfigurationError, match=r"ORCH_CONFIG_FILE=.*absent.json: no such file; mount"):
        load_orchestrator_settings()


def test_a_bad_environment_value_is_still_named_as_the_variable(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.json", {"ORCH_MODELS": MODELS, "ORCH_CACHE_TTL_S": 60})
    clean_environment.setenv(CONFIG_FILE_VARIABLE, str(config))
    clean_environment.setenv("ORCH_CACHE_TTL_S", "soon")
    with pytest.raises(ConfigurationError, match=r"^ORCH_CACHE_TTL_S: .*\(got 'soon'\)"):
        load_orchestrator_settings()


# --- the real process ------------------------------------------------------------------


@contextmanager
def orchestrator(
    fake_upstream_url: str, data_dir: Path, config: Path, **env: str
) -> Iterator[ServiceProcess]:
    full_env = {
        "OPENAI_BASE_URL": fake_upstream_url,
        "OPENAI_API_KEY": "placeholder",
        "ORCH_DATA_DIR": str(data_dir),
        "ORCH_TIMEOUT_S": "2",
        CONFIG_FILE_VARIABLE: str(config),
        **env,
    }
    for _ in range(3):
        with running_module("orchestrator", full_env) as service:
            if _answers_as_this_orchestrator(service):
                yield service
                return
    raise RuntimeError(f"the orchestrator never answered on its own port:\n{service.output()}")


def _answers_as_this_orchestrator(service: ServiceProcess) -> bool:
    """Whether the server on the port is this process and not another that took the port.

    running_module takes any HTTP answer as the service's; on a machine shared with other
    test runs, another server can own the chosen port while this process is still starting
    (it then exits with "address already in use"). Only the orchestrator has a config check.
    """
    def settled() -> bool:
        if service.process.poll() is not None:
            return True
        try:
            return "config" in health(service)[1].get("checks", {})
        except (httpx.HTTPError, ValueError):
            return False

    wait_for(settled, timeout_s=60, what="the orchestrator's /health")
    return service.process.poll() is None


def health(service: ServiceProcess) -> tuple[int, dict[str, Any]]:
    response = httpx.get(service.base_url + "/health", timeout=5)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def test_the_service_runs_on_its_config_file_with_the_environment_on_top_and_health_says_so(
    fake_upstream_url: str, fake_upstream: FakeUpstreamClient, tmp_path: Path
) -> None:
    fake_upstream.reset_stats()
    config = write_config(tmp_path / "config.json", {
        "ORCH_MODELS": MODELS,
        "ORCH_DISABLED_MODELS": ["fake-b"],
        "ORCH_CACHE_TTL_S": 120,
        "ORCH_CACHE_MAX_ENTRIES": 7,
        "FF_VALIDATION": False,
    })
    with orchestrator(fake_upstream_url, tmp_path / "data", config, ORCH_CACHE_MAX_ENTRIES="5") as orch:
        first = httpx.post(orch.base_url + "/query", json={"prompt": "hello"}, timeout=10)
        again = httpx.post(orch.base_url + "/query", json={"prompt": "hello"}, timeout=10)
        disabled = httpx.post(orch.base_url + "/query", json={"prompt": "hi", "models": ["fake-b"]},
                              timeout=10)
        stats = httpx.get(orch.base_url + "/stats", timeout=5).json()
        code, body = health(orch)

    assert first.status_code == 200, first.text
    assert again.json()["cached"] is True
    assert [result["model"] for result in first.json()["results"]] == ["fake-a"], "fake-b is disabled"
    assert set(fake_upstream.stats()) == {"fake-a"}
    assert disabled.status_code == 400
    assert disabled.json()["error"]["code"] == "model_disabled"
    assert "models[0]" in disabled.json()["error"]["message"]
    assert stats["flags"]["FF_VALIDATION"] is False, "the file's flag took effect"
    assert stats["cache"]["ttl_s"] == 120 and stats["cache"]["max_entries"] == 5
    assert {model: entry["enabled"] for model, entry in stats["models"].items()} == {
        "fake-a": True, "fake-b": False}

    # The kit's shape and status code, with what is running in three more checks.
    assert code == 200 and body["status"] == "healthy"
    checks = body["checks"]
    assert {name: check["status"] for name, check in checks.items()} == dict.fromkeys(checks, "ok")
    assert checks["cache"]["detail"] == "1 of 5 entries, TTL 120 s, 1 hits, 1 misses"
    assert checks["models"]["detail"] == "fake-a (enabled), fake-b (disabled)"
    where = checks["config"]["detail"]
    assert re.search(rf"from {re.escape(str(config))}: [^;]*ORCH_CACHE_TTL_S", where), where
    assert re.search(r"from the environment: [^;]*ORCH_CACHE_MAX_ENTRIES", where), where
    assert not re.search(rf"from {re.escape(str(config))}: [^;]*ORCH_CACHE_MAX_ENTRIES", where), where


def test_a_changed_config_file_takes_effect_at_the_next_start(
    fake_upstream_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.json", {"ORCH_MODELS": MODELS, "ORCH_CACHE_TTL_S": 60})
    with orchestrator(fake_upstream_url, tmp_path / "data", config) as orch:
        _, before = health(orch)
        write_config(config, {"ORCH_MODELS": MODELS, "ORCH_CACHE_TTL_S": 30})
        _, running = health(orch)
    with orchestrator(fake_upstream_url, tmp_path / "data", config) as orch:
        _, after = health(orch)

    assert "TTL 60 s" in before["checks"]["cache"]["detail"]
    assert "TTL 60 s" in running["checks"]["cache"]["detail"], "read once, at start-up"
    assert "TTL 30 s" in after["checks"]["cache"]["detail"]


def test_a_bad_config_file_stops_the_process_at_start_naming_the_file_and_the_key(
    fake_upstream_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.json", {"ORCH_MODELS": MODELS, "ORCH_CACHE_TTL": 60})
    with (
        pytest.raises(RuntimeError) as stopped,
        orchestrator(fake_upstream_url, tmp_path / "data", config),
    ):
        pass
    message = str(stopped.value)
    assert "orchestrator exited with 2" in message
    assert f"{config}: key 'ORCH_CACHE_TTL' is not a setting; did you mean 'ORCH_CACHE_TTL_S'" in message
    assert "Traceback" not in message
