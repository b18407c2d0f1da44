"""``python -m textgen``: validate the environment, load the weights, serve /generate."""

from __future__ import annotations

import sys

from modelkit import load_settings, run

from textgen.service import TextgenSettings, build_app
from textgen.weights import WeightsError


def main() -> None:
    settings = load_settings(TextgenSettings)
    try:
        app = build_app(settings)
    except WeightsError as error:
        print(f"configuration error: TEXTGEN_WEIGHTS: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    run(app, settings)


if __name__ == "__main__":
    main()
