"""textgen: a small character-level GPT in torch, served as a model service (`python -m textgen`)."""
