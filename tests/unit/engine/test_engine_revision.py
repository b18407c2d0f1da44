"""A revision names what the pods run: the template and the config, never the replicas."""

from __future__ import annotations

import re

import pytest
from modeldeploy.engine import revision_of
from modeldeploy.spec import ModelDeploymentSpec
from rollout_world import spec_of

BASE = spec_of("v1", config={"FF_CACHE": "on"})

SAME: list[tuple[str, ModelDeploymentSpec]] = [
    ("scaling replicas", spec_of("v1", replicas=9, config={"FF_CACHE": "on"})),
    ("changing the steps", spec_of("v1", steps=[{"setWeight": 50}], config={"FF_CACHE": "on"})),
    ("changing the bake time",
     spec_of("v1", config={"FF_CACHE": "on"}, rollback={"bakeTime": "1h"})),
]
DIFFERENT: list[tuple[str, ModelDeploymentSpec]] = [
    ("a new image", spec_of("v2", config={"FF_CACHE": "on"})),
    ("a feature flag flipped", spec_of("v1", config={"FF_CACHE": "off"})),
    ("a feature flag added", spec_of("v1", config={"FF_CACHE": "on", "FF_NEW": "1"})),
    ("a GPU requested", spec_of("v1", gpu=True, config={"FF_CACHE": "on"})),
]


@pytest.mark.parametrize("other", [c[1] for c in SAME], ids=[c[0] for c in SAME])
def test_what_does_not_change_the_pods_keeps_the_revision(other: ModelDeploymentSpec) -> None:
    assert revision_of(other) == revision_of(BASE)


@pytest.mark.parametrize("other", [c[1] for c in DIFFERENT], ids=[c[0] for c in DIFFERENT])
def test_what_changes_the_pods_makes_a_new_revision(other: ModelDeploymentSpec) -> None:
    assert revision_of(other) != revision_of(BASE)


def test_a_revision_is_ten_hex_characters_and_stable_across_runs() -> None:
    revision = revision_of(spec_of("v1"))
    assert re.fullmatch(r"[0-9a-f]{10}", revision)
    # Pinned: a revision that changed between operator versions would restart every pod.
    assert revision == revision_of(spec_of("v1")) == "8142a35338"


def test_no_config_and_empty_config_are_the_same_revision() -> None:
    assert revision_of(spec_of("v1")) == revision_of(spec_of("v1", config={}))
