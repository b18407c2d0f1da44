"""The sandbox data plane's RequestMirror pieces: which requests a filter copies (exactly,
not by chance), where to, and what the copy carries (Envoy's shadow Host, the mark)."""

from __future__ import annotations

import pytest
from mdsandbox.dataplane import (
    MIRROR_HEADER,
    MirrorSampler,
    mirror_fraction,
    mirror_headers,
    mirror_target,
    request_mirrors,
    shadow_host,
)


@pytest.mark.parametrize(
    ("mirror", "fraction"),
    [
        ({"percent": 50}, (50, 100)),
        ({"percent": 0}, (0, 100)),
        ({"percent": 100}, (100, 100)),
        ({"fraction": {"numerator": 1, "denominator": 3}}, (1, 3)),
        ({"fraction": {"numerator": 7}}, (7, 100)),  # denominator 100 by default
        ({}, (1, 1)),  # neither: every request
        ({"percent": 150}, (100, 100)),
        ({"fraction": {"numerator": 5, "denominator": 0}}, (0, 1)),
        ({"percent": "half"}, (0, 1)),  # no number: nothing copied, the user still served
    ],
)
def test_the_share_a_mirror_copies(mirror: dict[str, object], fraction: tuple[int, int]) -> None:
    assert mirror_fraction({"backendRef": {"name": "b"}, **mirror}) == fraction


@pytest.mark.parametrize(("numerator", "denominator"), [(50, 100), (1, 3), (37, 100), (0, 100), (1, 1)])
def test_exactly_numerator_of_every_denominator_requests_are_copied(
    numerator: int, denominator: int
) -> None:
    sampler = MirrorSampler()
    taken = [sampler.take(numerator, denominator) for _ in range(denominator * 5)]
    assert sum(taken) == numerator * 5
    for start in range(0, len(taken), denominator):  # in every window of one denominator
        assert sum(taken[start:start + denominator]) == numerator


def test_half_is_every_second_request_and_a_new_share_starts_afresh() -> None:
    sampler = MirrorSampler()
    assert [sampler.take(50, 100) for _ in range(6)] == [False, True] * 3
    assert [sampler.take(1, 3) for _ in range(3)] == [False, False, True]


def test_the_rules_mirror_filters_and_their_services() -> None:
    rule = {"filters": [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {}},
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "b", "port": 80}}},
        {"type": "RequestMirror",
         "requestMirror": {"backendRef": {"name": "c", "namespace": "other"}, "percent": 5}},
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "x", "kind": "Other",
                                                                   "group": "example.com"}}},
    ]}
    mirrors = request_mirrors(rule)
    assert [index for index, _ in mirrors] == [1, 2, 3]
    assert [mirror_target(mirror, "ns") for _, mirror in mirrors] == [("ns", "b"), ("other", "c"), None]


@pytest.mark.parametrize(
    ("host", "shadow"),
    [("127.0.0.1:8080", "127.0.0.1-shadow:8080"), ("api.example.com", "api.example.com-shadow"),
     ("svc.ns:80", "svc.ns-shadow:80")],
)
def test_the_copy_has_envoys_shadow_host(host: str, shadow: str) -> None:
    assert shadow_host(host) == shadow


def test_the_copy_carries_the_users_headers_the_shadow_host_and_the_mark() -> None:
    headers = mirror_headers(
        {"Host": "gw:80", "Authorization": "Bearer t", "Connection": "keep-alive",
         "x-sandbox-mirrored": "false", "Content-Type": "application/json"},
        "gw:80",
    )
    assert headers == {"Authorization": "Bearer t", "Content-Type": "application/json",
                       "Host": "gw-shadow:80", MIRROR_HEADER: "true"}
