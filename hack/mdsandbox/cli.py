"""``hack/sandbox`` (``python -m mdsandbox``): up, down, status, and the supervisor itself.

``up`` prints, each on its own line, so scripts can pick them out::

    sandbox up in 3.1s (dir /repo/.sandbox)
    KUBECONFIG=/repo/.sandbox/kubeconfig
    API=http://127.0.0.1:40001
    PROMETHEUS=http://127.0.0.1:40002
    FAKE_UPSTREAM=http://127.0.0.1:40003/v1

(``eval "$(hack/sandbox up | grep =)"`` exports them.) ``down`` stops every process
of the sandbox; ``status`` prints the state and exits 0 when it runs, 3 when not.
``audit`` counts the API requests in ``<dir>/audit.log`` per user agent, split into
reads, writes and watches (see ``mdsandbox.audit``); it works on a stopped sandbox too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from mdsandbox.prometheus import parse_duration
from mdsandbox.sandbox import DEFAULT_DIR, SandboxError, is_running, stop_processes, up
from mdsandbox.state import read_state


def _duration(text: str) -> str:
    try:
        parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return text


def _at_least_zero(parse: Callable[[str], float], message: str) -> Callable[[str], float]:
    """An argparse type: ``parse(text)`` when it is a number >= 0, else ``message``."""

    def check(text: str) -> float:
        try:
            value = parse(text)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(f"{message}, not {text!r}")
        return value

    return check


_gpus = _at_least_zero(int, "--gpus must be a whole number >= 0")
_seconds = _at_least_zero(float, "--since takes seconds ago (a number >= 0)")


def _audit(workdir: Path, since: float | None, agent: str | None, as_json: bool) -> int:
    from mdsandbox.audit import format_table, read_audit, summarize

    path = workdir / "audit.log"
    if not path.exists():
        print(f"error: no audit log at {path}; is --dir the sandbox's folder?", file=sys.stderr)
        return 1
    began = None if since is None else time.time() - since
    summary = summarize(read_audit(path, since=began, user_agent_prefix=agent))
    if as_json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(format_table(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hack/sandbox",
        description="The local Kubernetes stand-in: API server, controllers, process kubelet, "
        "data plane, Prometheus and a fake OpenAI upstream.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_dir(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                         help=f"the sandbox's folder (default {DEFAULT_DIR})")

    start = commands.add_parser("up", help="start a sandbox in the background")
    with_dir(start)
    start.add_argument("--scrape-interval", type=_duration, default="5s",
                       help="Prometheus scrape and rule evaluation interval (default 5s)")
    start.add_argument("--no-prometheus", action="store_true", help="do not run Prometheus")
    start.add_argument("--gpus", type=_gpus, default=0,
                       help="nvidia.com/gpu capacity of the sandbox's one node (default 0)")
    start.add_argument("--json", action="store_true", help="print the state file instead")

    down = commands.add_parser("down", help="stop the sandbox and every process it started")
    with_dir(down)

    status = commands.add_parser("status", help="say whether the sandbox runs, and where")
    with_dir(status)
    status.add_argument("--json", action="store_true", help="print the state file")

    audit = commands.add_parser(
        "audit", help="count the API requests in the audit log per user agent: reads, "
        "writes, watches")
    with_dir(audit)
    audit.add_argument("--since", type=_seconds, default=None, metavar="SECONDS_AGO",
                       help="only requests of the last SECONDS_AGO seconds")
    audit.add_argument("--agent", default=None, metavar="PREFIX",
                       help="only user agents starting with PREFIX "
                       "(e.g. modeldeploy-operator/, kubectl/)")
    audit.add_argument("--json", action="store_true",
                       help="print the summary as JSON, with a count per verb")

    supervise = commands.add_parser("supervise", help="(internal) run the sandbox in the foreground")
    with_dir(supervise)
    supervise.add_argument("--scrape-interval", type=_duration, default="5s")
    supervise.add_argument("--no-prometheus", action="store_true")
    supervise.add_argument("--gpus", type=_gpus, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workdir: Path = args.dir.resolve()
    if args.command == "supervise":
        from mdsandbox.supervisor import SupervisorConfig
        from mdsandbox.supervisor import main as supervise_main

        return supervise_main(SupervisorConfig(
            workdir=workdir, scrape_interval=args.scrape_interval,
            prometheus=not args.no_prometheus, gpus=args.gpus,
        ))
    if args.command == "audit":
        return _audit(workdir, args.since, args.agent, args.json)
    try:
        if args.command == "up":
            began = time.monotonic()
            try:
                state = up(workdir, scrape_interval=args.scrape_interval,
                           prometheus=not args.no_prometheus, gpus=args.gpus)
            except KeyboardInterrupt:
                stop_processes(workdir)  # interrupted start-up: leave nothing running
                print("interrupted; sandbox stopped", file=sys.stderr)
                return 130
            if args.json:
                print(json.dumps(asdict(state), indent=2))
                return 0
            print(f"sandbox up in {time.monotonic() - began:.1f}s (dir {workdir})")
            print(f"KUBECONFIG={state.kubeconfig}")
            print(f"API={state.api_url}")
            print(f"PROMETHEUS={state.prometheus_url or ''}")
            print(f"FAKE_UPSTREAM={state.fake_upstream_url or ''}")
            for note in state.notes:
                print(f"note: {note}")
            return 0
        if args.command == "down":
            if read_state(workdir) is None:
                print(f"no sandbox in {workdir}")
                return 0
            killed = stop_processes(workdir)
            extra = f" (killed {len(killed)} that did not stop)" if killed else ""
            print(f"sandbox down (dir {workdir}){extra}")
            return 0
        found = read_state(workdir)
        running = is_running(found)
        if args.json:
            print(json.dumps(asdict(found) if found else None, indent=2))
        elif found is None:
            print(f"no sandbox in {workdir}; start one with: hack/sandbox up --dir {workdir}")
        else:
            print(f"phase: {found.phase if running else 'Stopped'}"
                  + (f" ({found.message})" if found.message else ""))
            print(f"KUBECONFIG={found.kubeconfig}")
            print(f"API={found.api_url}")
            print(f"PROMETHEUS={found.prometheus_url or ''}")
            print(f"FAKE_UPSTREAM={found.fake_upstream_url or ''}")
            print(f"supervisor pid {found.supervisor_pid}, gpus {found.gpus}, "
                  f"scrape interval {found.scrape_interval}")
        return 0 if running else 3
    except SandboxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
