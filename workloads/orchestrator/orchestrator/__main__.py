"""``python -m orchestrator``: configuration from the environment (see README.md)."""

from modelkit.runner import serve

from orchestrator.app import build_app
from orchestrator.config import OrchestratorSettings

if __name__ == "__main__":
    serve(OrchestratorSettings, build_app)
