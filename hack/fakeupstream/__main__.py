"""``python -m fakeupstream``: serve the fake upstream on HOST:PORT."""

from modelkit import serve

from fakeupstream.app import FakeUpstreamSettings, build_app


def main() -> None:
    serve(FakeUpstreamSettings, build_app)


if __name__ == "__main__":
    main()
