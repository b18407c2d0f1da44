"""``python -m song_analyzer``: serve song-analyzer on HOST:PORT (settings from the environment)."""

from modelkit import serve

from song_analyzer.app import build_app
from song_analyzer.config import SongAnalyzerSettings


def main() -> None:
    serve(SongAnalyzerSettings, build_app)


if __name__ == "__main__":
    main()
