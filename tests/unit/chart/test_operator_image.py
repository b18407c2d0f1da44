"""The operator image the chart runs: multi-stage on python:3.11-slim, non-root with the UID the
chart's securityContext expects, entrypoint `modeldeploy-operator`, nothing built in the final
stage. (No container engine here, so the Dockerfile is read, not built; hack/kind-up.sh builds it.)"""

from __future__ import annotations

import re
import tomllib

import yaml
from chart_harness import CHART, REPO, dockerfile_stages

DOCKERFILE = REPO / "operator" / "Dockerfile"


def _stages() -> list[list[str]]:
    return dockerfile_stages(DOCKERFILE)


def test_image_is_multi_stage_on_python_311_slim() -> None:
    stages = _stages()
    assert len(stages) >= 2
    assert all(stage[0].split()[1] == "python:3.11-slim" for stage in stages)


def test_final_stage_copies_the_built_environment_and_builds_nothing() -> None:
    final = _stages()[-1]
    assert any(i.startswith("COPY --from=") for i in final)
    forbidden = re.compile(r"\b(pip install|apt-get install|gcc|build-essential|make)\b")
    assert not [i for i in final if i.startswith("RUN") and forbidden.search(i)]


def test_final_stage_runs_as_the_non_root_uid_the_chart_expects() -> None:
    final = _stages()[-1]
    user = [i.split()[1] for i in final if i.startswith("USER ")][-1]
    uid = int(user.split(":")[0])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert uid != 0
    assert uid == values["podSecurityContext"]["runAsUser"]


def test_entrypoint_is_the_operators_console_script() -> None:
    final = _stages()[-1]
    entrypoint = [i for i in final if i.startswith("ENTRYPOINT")][-1]
    assert entrypoint == 'ENTRYPOINT ["modeldeploy-operator"]'
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "modeldeploy-operator" in scripts


def test_image_exposes_the_ports_the_chart_probes_and_scrapes() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    exposed = {int(p) for i in _stages()[-1] if i.startswith("EXPOSE") for p in i.split()[1:]}
    assert {values["health"]["port"], values["metrics"]["port"]} <= exposed
