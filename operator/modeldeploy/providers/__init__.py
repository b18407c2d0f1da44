"""Metric providers behind one interface, picked from a registry by the spec's provider key.

A provider turns one query into one :class:`~modeldeploy.measurement.QueryResult`; it
never raises for a bad answer, so the analysis can count it as inconclusive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from modeldeploy import spec as s
from modeldeploy.measurement import QueryResult


class MetricProvider(Protocol):
    async def query(self, promql: str) -> QueryResult:
        """Evaluate ``promql`` now; one series expected."""


ProviderFactory = Callable[[Any, "ProviderSecrets"], MetricProvider]
PROVIDERS: dict[str, ProviderFactory] = {}


class ProviderSecrets(Protocol):
    """Secret material the shell read for a provider (bearer token, CA bundle)."""

    @property
    def bearer_token(self) -> str | None: ...

    @property
    def ca_bundle_path(self) -> str | None: ...


def register(key: str) -> Callable[[ProviderFactory], ProviderFactory]:
    def add(factory: ProviderFactory) -> ProviderFactory:
        PROVIDERS[key] = factory
        return factory

    return add


def provider_for(config: s.Provider, secrets: ProviderSecrets) -> MetricProvider:
    for key, factory in PROVIDERS.items():
        settings = getattr(config, key, None)
        if settings is not None:
            return factory(settings, secrets)
    raise ValueError("analysis.provider names no known provider")


from modeldeploy.providers import prometheus  # noqa: E402  (registers itself)

__all__ = ["PROVIDERS", "MetricProvider", "ProviderSecrets", "prometheus", "provider_for", "register"]
