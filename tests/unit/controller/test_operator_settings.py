"""The operator's numeric settings: a bad value stops it at start, naming the variable."""

from __future__ import annotations

import pytest
from modeldeploy.controller import OperatorConfig

NUMERIC = ["MODELDEPLOY_RESYNC_SECONDS", "MODELDEPLOY_WORKERS", "MODELDEPLOY_QUERY_CONCURRENCY",
           "MODELDEPLOY_WATCH_TIMEOUT", "MODELDEPLOY_API_CALL_DEADLINE_SECONDS",
           "MODELDEPLOY_METRICS_PORT", "MODELDEPLOY_LEASE_SECONDS"]


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", ["ten", "0", "-5", "nan", "inf", "1.5e999"])
def test_a_bad_numeric_setting_is_refused_naming_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str,
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as refused:
        OperatorConfig.from_env()
    message = str(refused.value)
    assert message.startswith(f"{name}={value!r}"), message
    assert "above 0" in message and "unset it" in message


def test_good_values_are_read_with_their_types_and_unset_ones_keep_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in NUMERIC:
        monkeypatch.delenv(name, raising=False)
    defaults = OperatorConfig.from_env()
    assert (defaults.workers, defaults.api_call_deadline, defaults.metrics_port) == (16, 60.0, 9090)
    monkeypatch.setenv("MODELDEPLOY_WORKERS", " 4 ")
    monkeypatch.setenv("MODELDEPLOY_API_CALL_DEADLINE_SECONDS", "2.5")
    monkeypatch.setenv("MODELDEPLOY_METRICS_PORT", "off")
    monkeypatch.setenv("MODELDEPLOY_LEASE_SECONDS", "")
    config = OperatorConfig.from_env()
    assert (config.workers, config.api_call_deadline, config.metrics_port) == (4, 2.5, None)
    assert config.lease_seconds == 15
    # A whole-number setting does not take a fraction.
    monkeypatch.setenv("MODELDEPLOY_WORKERS", "2.5")
    with pytest.raises(ValueError, match=r"MODELDEPLOY_WORKERS='2.5' is not a whole number"):
        OperatorConfig.from_env()
