"""The sandbox's state file (``<dir>/state.json``) and the process checks built on it.

The file is rewritten atomically by the supervisor as it starts and stops::

    {"phase": "Starting|Running|Stopped|Failed", "message": "...", "dir": "...",
     "supervisor_pid": 122, "process_group": 122,
     "api_url": "http://127.0.0.1:P", "kubeconfig": ".../kubeconfig",
     "prometheus_url": "http://127.0.0.1:Q" | null,
     "fake_upstream_url": "http://127.0.0.1:R/v1" | null,
     "pids": {"apiserver": 123, "prometheus": 124, "fake-upstream": 125},
     "gpus": 0, "scrape_interval": "5s", "startup_seconds": 2.7, "notes": []}

Pods' processes are not listed (they come and go); they are in the supervisor's
process group, and in each pod's ``containerStatuses[].containerID`` (process://PID).

Liveness is read from /proc, where a zombie (state Z) counts as gone: the container
PID 1 here does not reap orphans, so ``kill(pid, 0)`` alone would see the dead alive.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "state.json"


@dataclass
class SandboxState:
    phase: str
    dir: str
    supervisor_pid: int
    process_group: int
    message: str = ""
    api_url: str | None = None
    kubeconfig: str | None = None
    prometheus_url: str | None = None
    fake_upstream_url: str | None = None
    pids: dict[str, int] = field(default_factory=dict)
    gpus: int = 0
    scrape_interval: str = "5s"
    startup_seconds: float | None = None
    notes: list[str] = field(default_factory=list)


def write_state(workdir: Path, state: SandboxState) -> None:
    fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".state.")
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(state), handle, indent=2)
    os.replace(tmp, workdir / STATE_FILE)


def read_state(workdir: Path) -> SandboxState | None:
    path = workdir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return SandboxState(**data)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
    return text[text.rindex(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in the process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members
