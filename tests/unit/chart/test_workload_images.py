"""Each model service's image runs what the sandbox runs, as a non-root user, from files the
repository has. (No container engine here, so each Dockerfile is read, not built; the kind e2e
tier builds them with hack/kind-up.sh.)

The sandbox's kubelet runs ``modeldeploy/<service>:<tag>`` as ``python -m <package>``
(mdsandbox.kubelet.IMAGES); the image of the same name must start the same package, or
what the integration tests prove is not what a cluster runs.
"""

from __future__ import annotations

import json

import pytest
from chart_harness import REPO, dockerfile_stages
from mdsandbox.kubelet import IMAGES

SERVICES = sorted(p.parent.name for p in (REPO / "workloads").glob("*/Dockerfile"))


def stages(service: str) -> list[list[str]]:
    return dockerfile_stages(REPO / "workloads" / service / "Dockerfile")


def test_every_model_service_has_an_image() -> None:
    assert SERVICES == ["chat-proxy", "image-gen", "orchestrator", "song-analyzer", "textgen"]


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_starts_the_package_the_sandbox_runs(service: str) -> None:
    final = stages(service)[-1]
    command = json.loads([i for i in final if i.startswith("CMD ")][-1][len("CMD "):])
    assert command == ["python", "-m", IMAGES[service]]


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_runs_as_a_non_root_user(service: str) -> None:
    final = stages(service)[-1]
    users = [i.split()[1] for i in final if i.startswith("USER ")]
    assert users, "the final stage sets USER"
    assert users[-1].split(":")[0] not in {"0", "root"}


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_builds_from_files_the_repository_has(service: str) -> None:
    for stage in stages(service):
        for instruction in stage:
            if not instruction.startswith("COPY ") or "--from=" in instruction:
                continue
            *sources, _target = instruction.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), f"{service}: COPY {source} is not in the repository"


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_listens_where_the_examples_probe(service: str) -> None:
    final = stages(service)[-1]
    exposed = {p for i in final if i.startswith("EXPOSE ") for p in i.split()[1:]}
    assert "8080" in exposed
    assert any(i.startswith("ENV ") and "PORT=8080" in i for i in final), "PORT=8080 in the env"
