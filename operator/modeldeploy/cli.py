"""`modeldeploy` (also `kubectl modeldeploy`): read a rollout, and steer it.

Reading: ``list``, ``status NAME [--watch]``, ``history NAME``.
Steering: ``promote NAME [--full]``, ``abort``, ``retry``, ``pause``, ``resume``.

What it prints from the cluster (messages, reasons, Events) goes through
:func:`modeldeploy.messages.printable`: no control character from a status or an Event
(an ANSI escape in an error body, say) reaches the terminal. Every request has the
operator's deadline (``REQUEST_TIMEOUT``: connect, read).

Steering never touches the spec (git owns it; Argo CD would see drift and self-heal
would undo it). Like ``kubectl argo rollouts``, each control is a request written to
the resource's status subresource (``status.control``); the operator consumes it on
its next tick, acts, and clears it. So they need RBAC on ``modeldeployments/status``
only, and work the same whether the spec came from kubectl or from git.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
import time
from collections.abc import Sequence
from typing import Any

import kubernetes
from kubernetes.client import ApiException

from modeldeploy import engine
from modeldeploy import spec as s
from modeldeploy.kube.client import REQUEST_TIMEOUT
from modeldeploy.messages import printable

Manifest = dict[str, Any]
CONTROLS = {
    "promote": "promote",
    "abort": "abort",
    "retry": "retry",
    "pause": "pause",
    "resume": "resume",
}


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _timestamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ago(stamp: str | None, now: dt.datetime) -> str:
    if not stamp:
        return "-"
    try:
        then = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    seconds = int((now - then).total_seconds())
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def table(rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Left-aligned columns, two spaces apart, like kubectl's; cells printable, one line each."""
    if not rows:
        return ""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def _deployment_counts(deployments: list[Manifest], revision: str | None) -> str:
    if not revision:
        return ""
    for deployment in deployments:
        labels = deployment["metadata"].get("labels") or {}
        if labels.get(s.LABEL_REVISION) == revision:
            status = deployment.get("status") or {}
            wanted = (deployment.get("spec") or {}).get("replicas", 0)
            return f"({status.get('readyReplicas') or 0}/{wanted} ready)"
    return "(no deployment)"


def render_status(
    body: Manifest, deployments: list[Manifest], events: list[Manifest], now: dt.datetime
) -> str:
    """The human view of one ModelDeployment, as `modeldeploy status` prints it."""
    meta = body["metadata"]
    status = s.ModelDeploymentStatus.model_validate(body.get("status") or {})
    lines = [
        f"Name:       {meta['name']}",
        f"Namespace:  {meta.get('namespace', 'default')}",
        f"Phase:      {status.phase or 'Pending'}",
        f"Message:    {printable(status.message or '-')}",
    ]
    try:
        spec = s.ModelDeploymentSpec.model_validate(body.get("spec") or {})
    except Exception:  # an invalid spec is shown through its condition below
        spec = None
    if spec is not None:
        # The engine's own step list (the spec's steps plus the implied full 100%), so the
        # numbers match status.currentStep and the operator's messages.
        steps = engine.steps_of(spec)
        kind = "canary" if spec.strategy.canary is not None else "blue-green"
        current = status.current_step if status.canary_revision else None
        where = f"step {current + 1}/{len(steps)}" if current is not None else "no rollout in progress"
        lines.append(f"Strategy:   {kind}, {where}")
        for i, step in enumerate(steps):
            marker = "->" if current == i else "  "
            lines.append(f"  {marker} {i + 1}. {printable(step.describe())}")
    weight = status.canary_weight or 0
    lines += [
        f"Weight:     canary {weight}% / stable {100 - weight}%",
        f"Stable:     {status.stable_revision or '-'} "
        f"{_deployment_counts(deployments, status.stable_revision)}".rstrip(),
        f"Canary:     {status.canary_revision or '-'} "
        f"{_deployment_counts(deployments, status.canary_revision)}".rstrip(),
    ]
    if status.analysis:
        rows = [["METRIC", "VALUE", "STABLE", "THRESHOLD", "VERDICT", "MEASURED"]]
        for metric in status.analysis:
            rows.append([
                metric.name,
                "-" if metric.value is None else f"{metric.value:.4g}",
                "-" if metric.stable_value is None else f"{metric.stable_value:.4g}",
                metric.threshold or "-",
                str(metric.verdict),
                _ago(metric.time, now),
            ])
        lines += ["Analysis:", table(rows, indent="  ")]
    if status.evaluation is not None:
        lines += render_evaluation(status.evaluation, now)
    if status.mirror is not None:
        mirrored = status.mirror
        requests = "-" if mirrored.requests is None else f"{mirrored.requests:.0f}"
        cost = "-" if mirrored.cost_usd is None else f"${mirrored.cost_usd:.4f}"
        lines.append(f"Mirror:     {mirrored.percent}% of requests copied to "
                     f"{mirrored.revision} since {_ago(mirrored.since, now)}: {requests} "
                     f"answered, extra upstream cost {cost}")
    if status.conditions:
        rows = [["CONDITION", "STATUS", "REASON", "MESSAGE"]]
        rows += [[c.type, c.status, c.reason, c.message] for c in status.conditions]
        lines += ["Conditions:", table(rows, indent="  ")]
    if events:
        rows = [["AGE", "TYPE", "REASON", "MESSAGE"]]
        for event in events[-10:]:
            stamp = event.get("lastTimestamp") or event.get("eventTime") or ""
            rows.append([_ago(stamp, now), event.get("type", ""), event.get("reason", ""),
                         event.get("message", "")])
        lines += ["Events:", table(rows, indent="  ")]
    return "\n".join(lines)


def render_evaluation(evaluation: s.EvaluationStatus, now: dt.datetime) -> list[str]:
    """The last evaluation: verdict, score, cost, and the first failing cases."""
    score = "-" if evaluation.score is None else f"{evaluation.score:.2f}"
    agreement = "" if evaluation.agreement is None else f", agreement {evaluation.agreement:.2f}"
    lines = [
        f"Evaluation: {evaluation.verdict} for {evaluation.revision} ({_ago(evaluation.finished_at, now)}):"
        f" {evaluation.passed}/{evaluation.cases} passed, score {score} "
        f"(min {evaluation.min_score:g}){agreement}, {evaluation.unanswered} unanswered, "
        f"{evaluation.tokens} tokens, ${evaluation.cost_usd:.4f}",
        f"  {printable(evaluation.message)}",
    ]
    if evaluation.failures:
        rows = [["CASE", "WHY"]] + [[f.id, f.reason] for f in evaluation.failures]
        lines.append(table(rows, indent="  "))
    return lines


def render_history(body: Manifest, now: dt.datetime) -> str:
    status = s.ModelDeploymentStatus.model_validate(body.get("status") or {})
    rows = [["REVISION", "OUTCOME", "WHEN", "REASON"]]
    rows += [[h.revision, h.outcome, _ago(h.time, now), h.reason] for h in status.history]
    return table(rows)


def render_list(items: list[Manifest]) -> str:
    rows = [["NAMESPACE", "NAME", "PHASE", "WEIGHT", "STABLE", "CANARY", "MESSAGE"]]
    for item in items:
        status = item.get("status") or {}
        rows.append([
            item["metadata"].get("namespace", ""),
            item["metadata"]["name"],
            status.get("phase", "Pending"),
            str(status.get("canaryWeight", 0)),
            status.get("stableRevision", "-"),
            status.get("canaryRevision") or "-",
            status.get("message", ""),
        ])
    return table(rows)


class Cluster:
    """The few API calls the CLI makes."""

    def __init__(self, context: str | None) -> None:
        try:
            kubernetes.config.load_kube_config(context=context)
        except (kubernetes.config.ConfigException, FileNotFoundError) as error:
            raise CliError(f"no usable kubeconfig ({error}); set KUBECONFIG or --context") from error
        self.custom = kubernetes.client.CustomObjectsApi()
        self.apps = kubernetes.client.AppsV1Api()
        self.core = kubernetes.client.CoreV1Api()
        _, active = kubernetes.config.list_kube_config_contexts()
        self.default_namespace: str = active.get("context", {}).get("namespace", "default")

    def get(self, namespace: str, name: str) -> Manifest:
        try:
            body: Manifest = self.custom.get_namespaced_custom_object(
                s.GROUP, s.VERSION, namespace, s.PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status == 404:
                raise CliError(f'modeldeployment "{name}" not found in namespace "{namespace}"') from error
            raise
        return body

    def list_all(self, namespace: str | None) -> list[Manifest]:
        if namespace is None:
            result = self.custom.list_cluster_custom_object(
                s.GROUP, s.VERSION, s.PLURAL, _request_timeout=REQUEST_TIMEOUT)
        else:
            result = self.custom.list_namespaced_custom_object(
                s.GROUP, s.VERSION, namespace, s.PLURAL, _request_timeout=REQUEST_TIMEOUT)
        items: list[Manifest] = result.get("items", [])
        return items

    def deployments(self, namespace: str, name: str) -> list[Manifest]:
        result = self.apps.list_namespaced_deployment(
            namespace, label_selector=f"{s.LABEL_NAME}={name}", _request_timeout=REQUEST_TIMEOUT)
        items: list[Manifest] = [self.apps.api_client.sanitize_for_serialization(d) for d in result.items]
        return items

    def events(self, namespace: str, name: str) -> list[Manifest]:
        result = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}", _request_timeout=REQUEST_TIMEOUT
        )
        events = [self.core.api_client.sanitize_for_serialization(e) for e in result.items]
        kept: list[Manifest] = [e for e in events if e.get("involvedObject", {}).get("kind") == s.KIND]
        kept.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return kept

    def request(self, namespace: str, name: str, action: str) -> None:
        self.get(namespace, name)  # a clear "not found" before writing
        control = {"action": action, "requestedAt": _timestamp(_now()), "requestedBy": getpass.getuser()}
        self.custom.patch_namespaced_custom_object_status(
            s.GROUP, s.VERSION, namespace, s.PLURAL, name, {"status": {"control": control}},
            _request_timeout=REQUEST_TIMEOUT,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modeldeploy",
        description="Read and steer ModelDeployment rollouts (also usable as `kubectl modeldeploy`).",
    )
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    parser.add_argument("--context", help="kubeconfig context to use")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="all ModelDeployments with phase and weights")
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    status = commands.add_parser("status", help="phase, step, weights, revisions, analysis, events")
    status.add_argument("name")
    status.add_argument("-w", "--watch", action="store_true", help="redraw every 2 s until Ctrl-C")
    history = commands.add_parser("history", help="recent revisions and their outcomes")
    history.add_argument("name")
    promote = commands.add_parser("promote", help="skip the current pause or analysis step")
    promote.add_argument("name")
    promote.add_argument("--full", action="store_true", help="go straight to 100%%")
    for action, text in [
        ("abort", "send all traffic back to stable and stop (phase Degraded)"),
        ("retry", "start the aborted or rolled-back revision again from step 1"),
        ("pause", "hold the rollout where it is"),
        ("resume", "release a paused rollout"),
    ]:
        commands.add_parser(action, help=text).add_argument("name")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cluster = Cluster(args.context)
    namespace = args.namespace or cluster.default_namespace
    if args.command == "list":
        print(render_list(cluster.list_all(None if args.all_namespaces else namespace)))
    elif args.command == "status":
        while True:
            body = cluster.get(namespace, args.name)
            text = render_status(
                body, cluster.deployments(namespace, args.name), cluster.events(namespace, args.name), _now()
            )
            if not args.watch:
                print(text)
                break
            print("\033[2J\033[H" + text, flush=True)
            time.sleep(2)  # a display refresh, not synchronisation
    elif args.command == "history":
        print(render_history(cluster.get(namespace, args.name), _now()))
    else:
        action = "promoteFull" if args.command == "promote" and args.full else CONTROLS[args.command]
        cluster.request(namespace, args.name, action)
        print(f'modeldeployment "{args.name}" {action} requested')
    return 0


def main() -> None:
    try:
        sys.exit(run())
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
