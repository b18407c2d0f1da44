"""image-gen: turns a prompt into an image through an OpenAI-compatible images API."""
