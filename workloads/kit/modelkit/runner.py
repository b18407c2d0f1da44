"""Running a service: ``python -m <service>`` calls :func:`serve`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from modelkit.logs import configure_logging
from modelkit.settings import ServiceSettings, load_settings

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def run(app: FastAPI, settings: ServiceSettings) -> None:
    """Serve ``app`` on HOST:PORT with JSON logs (blocks until SIGTERM/SIGINT)."""
    configure_logging(app.title, settings.log_level)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # Model calls can be long; a rollout should not wait minutes for a pod to stop.
        timeout_graceful_shutdown=10,
    )


def serve(settings_cls: type[SettingsT], build_app: Callable[[SettingsT], FastAPI]) -> None:
    """Validate settings (exit 2 naming the bad variable, before binding), build, run."""
    settings = load_settings(settings_cls)
    run(build_app(settings), settings)
