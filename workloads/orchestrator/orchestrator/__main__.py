"""``python -m orchestrator``: configuration from config.json and the environment (see README.md)."""

import sys

from modelkit.runner import run
from modelkit.settings import ConfigurationError

from orchestrator.app import build_app
from orchestrator.config import load_orchestrator_settings

if __name__ == "__main__":
    try:
        settings = load_orchestrator_settings()
    except ConfigurationError as error:
        # Before binding, as the kit's serve() does: a bad deployment fails fast, exit 2.
        print(f"configuration error: fix these settings and restart:\n{error}", file=sys.stderr)
        raise SystemExit(2) from None
    run(build_app(settings), settings)
