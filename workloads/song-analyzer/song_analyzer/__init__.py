"""song-analyzer: scores song lyrics with a fine-tuned chat model, with a result cache."""
