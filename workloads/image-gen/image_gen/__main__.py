"""``python -m image_gen``: serve image-gen on HOST:PORT (settings from the environment)."""

from modelkit import serve

from image_gen.app import build_app
from image_gen.config import ImageGenSettings


def main() -> None:
    serve(ImageGenSettings, build_app)


if __name__ == "__main__":
    main()
