"""Which metric provider addresses the operator may query, and what it says about the others.

The operator sends queries, and the bearer token it reads in the ModelDeployment's
namespace, to ``spec.analysis.provider.prometheus.address``, and reflects the answer into
status. With an allow-list set (the chart always sets one) any other address is refused
when the spec is validated, by exact address, never by prefix.
"""

from __future__ import annotations

import pytest
from modeldeploy import spec as s
from modeldeploy.analysis_runner import _Secrets
from modeldeploy.providers import ProviderAddresses, allowed_addresses

CHART_DEFAULT = "http://prometheus-operated.monitoring:9090"


def provider(address: str) -> s.Provider:
    return s.Provider.model_validate({"prometheus": {"address": address}})


@pytest.mark.parametrize(
    "address",
    [CHART_DEFAULT, CHART_DEFAULT + "/", "HTTP://Prometheus-Operated.Monitoring:9090"],
    ids=["the listed address", "with a trailing slash", "in other letter case"],
)
def test_a_listed_address_is_allowed_however_it_is_spelt(address: str) -> None:
    assert ProviderAddresses([CHART_DEFAULT]).allows(address)


@pytest.mark.parametrize(
    "address",
    [
        "http://prometheus-operated.monitoring:9091",
        "https://prometheus-operated.monitoring:9090",
        "http://prometheus-operated.monitoring:9090.evil.example",
        "http://prometheus-operated.monitoring:9090@evil.example",
        "http://prometheus-operated.monitoring:9090/../../elsewhere",
        "http://evil.example/?http://prometheus-operated.monitoring:9090",
    ],
    ids=["another port", "another scheme", "a longer host name", "the listed one as user info",
         "another path", "the listed one in the query"],
)
def test_anything_else_is_refused(address: str) -> None:
    assert not ProviderAddresses([CHART_DEFAULT]).allows(address)


def test_the_default_port_of_the_scheme_is_the_same_address() -> None:
    addresses = ProviderAddresses(["http://prometheus.monitoring"])
    assert addresses.allows("http://prometheus.monitoring:80")
    assert not addresses.allows("http://prometheus.monitoring:8080")


@pytest.mark.parametrize(
    ("setting", "allowed"),
    [
        (None, None),
        ("", ()),
        ("http://a:9090", ("http://a:9090",)),
        ("http://a:9090, http://b:9090,", ("http://a:9090", "http://b:9090")),
    ],
    ids=["unset: any address", "set but empty: none", "one address", "a comma-separated list"],
)
def test_the_setting_from_the_environment(setting: str | None, allowed: tuple[str, ...] | None) -> None:
    assert allowed_addresses(setting) == allowed


def test_no_allow_list_allows_any_address_and_an_empty_one_none() -> None:
    assert ProviderAddresses(None).allows("http://anything.example:1234")
    assert not ProviderAddresses([]).allows(CHART_DEFAULT)


def test_a_refused_address_names_the_field_the_address_and_the_chart_value_to_change() -> None:
    [line] = ProviderAddresses([CHART_DEFAULT]).refusals(provider("http://evil.example:9090"))
    field, problem = line.split(": ", 1)
    assert field == "spec.analysis.provider.prometheus.address"
    assert "'http://evil.example:9090' is not an allowed provider address" in problem
    assert "analysis.allowedProviderAddresses" in problem
    assert ProviderAddresses([CHART_DEFAULT]).refusals(provider(CHART_DEFAULT)) == []


def test_the_token_never_shows_in_a_repr() -> None:
    secrets = _Secrets(bearer_token="s3cr3t-token", ca_bundle_path="/tmp/ca.pem")
    assert "s3cr3t-token" not in repr(secrets) and "s3cr3t-token" not in str(secrets)
    assert "/tmp/ca.pem" in repr(secrets)
    assert secrets == _Secrets(bearer_token="s3cr3t-token", ca_bundle_path="/tmp/ca.pem"), (
        "still compared by value: a rotated token builds a new provider"
    )
    assert secrets != _Secrets(bearer_token="rotated", ca_bundle_path="/tmp/ca.pem")
