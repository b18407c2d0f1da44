"""Prometheus restarted, wiped or hung during an analysis step: never a promotion on missing
data, the reason in status while it is away, and the rollout completes once it answers.

A song-analyzer canary (real service processes, real traffic) is at its analysis step, and
has measured one passing round, when its Prometheus (``analysis_support.OwnPrometheus``,
a real one of its own on the sandbox's scrape configuration) goes away:

- **restarted keeping its data** (the same ``--storage.tsdb.path``), as on a rolling
  update: default limits, so a short absence holds the step, Progressing with no pass
  counted (each inconclusive round starts the passes again), and Prometheus is back after
  one such round (the first rounds after a restart may still lack data: inconclusive too);
- **restarted without its data** (a fresh data directory, as a lost volume), after an
  absence past ``inconclusiveLimit``: the rollout pauses saying so, and goes on by itself
  once the new, empty Prometheus has scraped enough to answer;
- **replaced by a server that accepts the connection and never answers** (a wedged
  process, a black-holed load balancer) on the same address: each round ends at the
  provider's timeout, the rollout pauses saying so, and goes on once Prometheus is back.

Throughout the absence the canary stays at its step, every round measured is
Inconclusive with the reason, and passes count in a row (an inconclusive round starts
them again, a pass before the outage never adds to one after it). ``inconclusiveLimit 1``
(two inconclusive rounds in a row pause) keeps the pausing scenarios short.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from analysis.analysis_support import (
    JSON,
    SONG_ANALYZER_GATES,
    SONG_V1,
    SONG_V2,
    OwnPrometheus,
    StatusTrail,
    apply,
    assert_passes_counted_in_a_row,
    condition,
    song_analyzer,
    wait_canary,
    wait_first_pass,
    wait_stable,
    wait_status,
)
from mdsandbox.prometheus import prometheus_binary
from mdsandbox.sandbox import Sandbox
from mdsandbox.testing import KubeAPI
from mdsandbox.traffic import TrafficGenerator, song_request
from operator_process import OperatorProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(prometheus_binary() is None,
                       reason="needs Prometheus: Debian's prometheus package (hack/setup installs it)"),
]
NAME = "songs-faults"
STEPS: list[JSON] = [{"setWeight": 50}, {"analysis": {"measurements": 2}}, {"setWeight": 100}]
PROVIDER_TIMEOUT = "2s"  # analysis_support.song_analyzer's provider timeout


class SilentServer:
    """Listens on ``port``, accepts every connection and never answers a byte.

    Connections are held open until :meth:`close`, so a client sees an open connection
    that never answers (not a refusal, not a reset).
    """

    def __init__(self, port: int) -> None:
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", port))  # SO_REUSEADDR on POSIX
        self._listener.settimeout(0.2)  # how often the accept loop looks for close()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._held.append(connection)
            self.accepted += 1

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for connection in self._held:
            connection.close()


def unreachable(url: str) -> str:
    """A round's reason while nothing listens at ``url``."""
    return f"Prometheus at {url} unreachable: ConnectError"


@dataclass(frozen=True)
class Fault:
    """How Prometheus goes away and comes back, and what the rounds meanwhile say."""

    name: str
    inconclusive_limit: int | None  # per gate; None keeps the default (3)
    fresh_data: bool = False
    never_answers: bool = False

    def reason(self, url: str) -> str:
        """The reason each round measured while Prometheus is away gives."""
        if self.never_answers:
            return (f"Prometheus at {url} did not answer within the provider's timeout "
                    f"({PROVIDER_TIMEOUT}, all tries together)")
        return unreachable(url)

    def take_away(self, prometheus: OwnPrometheus) -> SilentServer | None:
        if not self.never_answers:
            prometheus.stop()
            return None
        # Killed, so that its port is free at once for the server that never answers.
        prometheus.stop(kill=True)
        return SilentServer(prometheus.port)

    def bring_back(self, prometheus: OwnPrometheus, silent: SilentServer | None) -> None:
        if silent is not None:
            silent.close()
        prometheus.start(fresh_data=self.fresh_data)


FAULTS = [
    Fault("restarted keeping its data", inconclusive_limit=None),
    Fault("restarted without its data", inconclusive_limit=1, fresh_data=True),
    Fault("replaced by a server that never answers", inconclusive_limit=1, never_answers=True),
]


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(stamp: str) -> dt.datetime:
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


# PROVIDER_TIMEOUT (all tries of a query) and a second of stamp rounding: how close to a
# moment the port was free a round may be stamped and still have met it.
REPLACEMENT_SLACK = dt.timedelta(seconds=3)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.name)
def test_a_prometheus_fault_during_analysis_holds_the_canary_until_prometheus_answers_again(
    sandbox: Sandbox, kube: KubeAPI, namespace: str, operator: OperatorProcess,
    tmp_path: Path, fault: Fault,
) -> None:
    limits = [{"name": gate, "inconclusiveLimit": fault.inconclusive_limit}
              for gate in SONG_ANALYZER_GATES if fault.inconclusive_limit is not None]

    with OwnPrometheus(sandbox, tmp_path) as prometheus:
        def manifest(model: str, tag: str) -> JSON:
            body = song_analyzer(NAME, namespace, sandbox, prometheus=prometheus.url,
                                 model=model, tag=tag, steps=STEPS, metrics=limits)
            body["spec"]["replicas"] = 1  # canary and stable one pod each at 50%, canary alone at 100%
            return body

        apply(manifest(SONG_V1, "1.0.0"), sandbox)
        stable = wait_stable(kube, namespace, NAME)
        url = sandbox.service_url(namespace, NAME) + "/analyze"
        away = StatusTrail()
        after = StatusTrail()
        with TrafficGenerator(url, body=song_request, rate=12, max_seconds=240, timeout_s=15):
            apply(manifest(SONG_V2, "1.1.0"), sandbox)
            canary = wait_canary(kube, namespace, NAME, stable)
            before = wait_first_pass(kube, namespace, NAME)
            gone_at = utc_now()
            silent = fault.take_away(prometheus)
            replaced_at = utc_now()
            try:
                if fault.inconclusive_limit is None:
                    # Default limits: a short absence holds the step; back after one round.
                    held = wait_status(kube, namespace, NAME, away.seeing(
                        lambda s: any(m["name"] == "error-rate" and m["time"] > gone_at
                                      for m in s.get("analysis") or [])),
                        what="a round measured while Prometheus is away", timeout=60)
                else:
                    held = wait_status(kube, namespace, NAME, away.seeing(
                        lambda s: s.get("phase") != "Progressing"),
                        what="the rollout to stop progressing", timeout=60)
            finally:
                back_at = utc_now()
                fault.bring_back(prometheus, silent)
            done = wait_status(
                kube, namespace, NAME, after.seeing(
                    lambda s: s.get("stableRevision") == canary or s.get("phase") == "RolledBack"),
                what="the canary promoted once Prometheus answers again", timeout=120,
            )

    # While it was away: no step further, no promotion, and every round inconclusive
    # with the reason.
    assert all(s.get("stableRevision") == stable and s.get("canaryRevision") == canary
               and s.get("currentStep") == 1 for s in away.statuses), [
        (s.get("phase"), s.get("currentStep"), s.get("message")) for s in away.statuses]
    trail = StatusTrail()
    trail.statuses = [before, *away.statuses, *after.statuses]
    for gate in SONG_ANALYZER_GATES:
        rounds = [r for r in trail.rounds(gate) if r["step"] == 1]
        while_away = [r for r in rounds if gone_at < r["time"] <= back_at]
        assert while_away, f"no round of {gate} measured while Prometheus was away: {rounds}"
        assert all(r["verdict"] == "Inconclusive" and r.get("consecutivePasses", 0) == 0
                   for r in while_away), while_away
        # Refused while the port was free: in the moment between Prometheus and its
        # replacement, or between the replacement closing and Prometheus listening again.
        # A round is stamped when it starts (to the second) and its tries go on for up to
        # the provider's timeout, so one stamped that close to either moment may have met
        # the free port.
        assert all(fault.reason(prometheus.url) in r["message"] or (
            unreachable(prometheus.url) in r["message"]
            and (parse_time(r["time"]) <= parse_time(replaced_at) + REPLACEMENT_SLACK
                 or parse_time(r["time"]) >= parse_time(back_at) - REPLACEMENT_SLACK))
            for r in while_away), while_away
        assert_passes_counted_in_a_row(rounds)
    if silent is not None:
        assert silent.accepted > 0, "the operator's queries reached the server that never answers"

    if fault.inconclusive_limit is None:
        # Held at the step, counting no pass (one inconclusive round is within the
        # limit); the reason is each gate's, in status.analysis (checked above).
        assert held["phase"] == "Progressing", held.get("message")
        assert held["message"].startswith("step 2/4 analysis: analysis 0/2 passed"), held["message"]
    else:
        # Past its limit the rollout pauses where it was, saying why.
        assert held["phase"] == "Paused", held.get("message")
        assert (held["canaryWeight"], held["currentStep"]) == (50, 1)
        message = held["message"]
        assert message.startswith("step 2/4 analysis"), message
        assert "analysis inconclusive: error-rate: inconclusive 2 times in a row " \
               "(inconclusiveLimit 1): model requests not measured: " \
               + fault.reason(prometheus.url) in message, message
        assert "resumes on its own once a round is conclusive again" in message, message
        assert condition(held, "Degraded")["status"] == "False"
        assert condition(held, "RolledBack")["status"] == "False"

    # And the canary passed its analysis with Prometheus back, and was promoted.
    assert done["stableRevision"] == canary, done.get("message")
    entry = done["history"][0]
    assert (entry["revision"], entry["outcome"]) == (canary, "Promoted"), entry
    assert entry["steps"].count("analysis 2/2 passed") == 1, entry["steps"]
    if held["phase"] == "Paused":
        assert "analysis conclusive again: resumed" in entry["steps"], entry["steps"]

