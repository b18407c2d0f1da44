"""The chart's allow-list of metric provider addresses reaches the operator as it reads it.

``analysis.allowedProviderAddresses`` becomes MODELDEPLOY_ALLOWED_PROVIDER_ADDRESSES, which
``OperatorConfig.from_env`` turns into the addresses analysis may query (and send a token
to). The chart always sets it, so an empty list means no address, never any address.
"""

from __future__ import annotations

import helm_python as helm
import pytest
from chart_harness import SCENARIOS, objects, scenario_values
from modeldeploy.providers import ProviderAddresses
from test_chart_render import operator_config

CHART_PROMETHEUS = "http://prometheus-operated.monitoring:9090"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_mode_allows_the_charts_own_prometheus_and_nothing_else(
    scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = operator_config(objects(scenario_values(scenario)), monkeypatch)
    assert config.allowed_provider_addresses == (CHART_PROMETHEUS,)
    addresses = ProviderAddresses(config.allowed_provider_addresses)
    assert addresses.allows(CHART_PROMETHEUS)
    assert not addresses.allows("http://prometheus.elsewhere.example:9090")


def test_the_list_comes_from_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = ["http://prometheus.team-a:9090", "https://thanos-query.monitoring:10902/prometheus"]
    objs = objects({"analysis": {"allowedProviderAddresses": wanted}})
    assert operator_config(objs, monkeypatch).allowed_provider_addresses == tuple(wanted)


def test_an_empty_list_allows_no_address_rather_than_any(monkeypatch: pytest.MonkeyPatch) -> None:
    config = operator_config(objects({"analysis": {"allowedProviderAddresses": []}}), monkeypatch)
    assert config.allowed_provider_addresses == ()
    assert not ProviderAddresses(config.allowed_provider_addresses).allows(CHART_PROMETHEUS)


@pytest.mark.parametrize(
    "address",
    ["prometheus.monitoring:9090", "http://a:9090,http://b:9090", "ftp://prometheus:9090"],
    ids=["no scheme", "two in one entry", "not http"],
)
def test_the_schema_refuses_what_is_not_one_http_address(address: str) -> None:
    with pytest.raises(helm.HelmError, match="allowedProviderAddresses"):
        objects({"analysis": {"allowedProviderAddresses": [address]}})
