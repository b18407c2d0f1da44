"""Metric providers behind one interface, picked from a registry by the spec's provider key.

A provider turns one query into one :class:`~modeldeploy.measurement.QueryResult`; it
never raises for a bad answer, so the analysis can count it as inconclusive.

Where a provider may be asked (:class:`ProviderAddresses`): the operator sends queries,
and the bearer token it reads from the ModelDeployment's namespace, to the provider's
``address``, and reflects what comes back into status, which the `view` role reads. So
the chart gives the operator an allow-list (``analysis.allowedProviderAddresses``, as
MODELDEPLOY_ALLOWED_PROVIDER_ADDRESSES) and an address outside it is refused when the
spec is validated: no request, no token, nothing reflected.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from modeldeploy import spec as s
from modeldeploy.measurement import QueryResult

# A ModelDeployment, as (namespace, name).
ResourceKey = tuple[str, str]


class MetricProvider(Protocol):
    async def query(self, promql: str) -> QueryResult:
        """Evaluate ``promql`` now; one series expected."""

    async def scrape_intervals(self) -> dict[ResourceKey, dt.timedelta] | None:
        """How often each ModelDeployment's pods are scraped (the slowest of its pods), by
        resource; None when the provider cannot tell. Never raises."""


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


ALLOWED_ADDRESSES_ENV = "MODELDEPLOY_ALLOWED_PROVIDER_ADDRESSES"
ALLOWED_ADDRESSES_VALUE = "analysis.allowedProviderAddresses"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalized_address(address: str) -> str:
    """An address in one spelling: scheme and host in lower case, the port explicit, no
    trailing slash (``HTTP://Prom:80/`` and ``http://prom`` are the same address)."""
    parts = urllib.parse.urlsplit(address.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return address.strip()  # not a port: matches only the very same text
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urllib.parse.urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, parts.fragment))


def allowed_addresses(setting: str | None) -> tuple[str, ...] | None:
    """The allow-list from MODELDEPLOY_ALLOWED_PROVIDER_ADDRESSES (comma- or space-separated).

    Unset (None): no allow-list, any address (an operator run by hand, the sandbox). Set
    but empty: no address at all. The chart always sets it, from
    ``analysis.allowedProviderAddresses``.
    """
    if setting is None:
        return None
    return tuple(a for a in re.split(r"[,\s]+", setting) if a)


class ProviderAddresses:
    """The provider addresses the operator may query; None: any (no allow-list configured).

    An address is allowed when it is one of the list, compared in
    :func:`normalized_address`'s spelling: no prefixes, no wildcards, so a listed
    ``http://prometheus.monitoring:9090`` never lets ``http://prometheus.monitoring:9090.evil.example``
    or ``http://prometheus.monitoring:9090@evil.example`` through.
    """

    def __init__(self, allowed: Iterable[str] | None) -> None:
        self.allowed = None if allowed is None else frozenset(normalized_address(a) for a in allowed)

    def allows(self, address: str) -> bool:
        return self.allowed is None or normalized_address(address) in self.allowed

    def refusals(self, config: s.Provider) -> list[str]:
        """One ``<field>: <problem and fix>`` line (as :func:`modeldeploy.spec.explain` writes
        them) per provider address outside the allow-list."""
        lines = []
        for key in PROVIDERS:
            address = getattr(getattr(config, key, None), "address", None)
            if isinstance(address, str) and not self.allows(address):
                lines.append(
                    f"spec.analysis.provider.{key}.address: {address!r} is not an allowed provider "
                    f"address; the operator queries (and sends tokens to) only the addresses its "
                    f"chart value {ALLOWED_ADDRESSES_VALUE} lists ({ALLOWED_ADDRESSES_ENV}): use one "
                    f"of those, or have it added there"
                )
        return lines


from modeldeploy.providers import prometheus  # noqa: E402  (registers itself)

__all__ = [
    "ALLOWED_ADDRESSES_ENV",
    "PROVIDERS",
    "MetricProvider",
    "ProviderAddresses",
    "ProviderSecrets",
    "allowed_addresses",
    "normalized_address",
    "prometheus",
    "provider_for",
    "register",
]
