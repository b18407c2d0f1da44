"""``python -m mdsandbox.apiserver --port N [--audit-log FILE] [--kubeconfig FILE]``."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from . import APIServer, write_kubeconfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mdsandbox.apiserver",
                                     description="Run the sandbox's Kubernetes API server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6443, help="0 picks a free port")
    parser.add_argument("--audit-log", type=Path, help="append one JSON line per request here")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for it here")
    parser.add_argument("--pod-log-dir", type=Path,
                        help="where the kubelet writes <ns>_<pod>_<container>.log (kubectl logs)")
    args = parser.parse_args(argv)
    server = APIServer(host=args.host, port=args.port, audit_log=args.audit_log,
                       pod_log_dir=args.pod_log_dir)
    server.start()
    if args.kubeconfig:
        write_kubeconfig(args.kubeconfig, server.url)
    print(f"mdsandbox API server listening on {server.url}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
