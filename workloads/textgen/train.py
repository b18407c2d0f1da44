"""Train textgen's weights: `python workloads/textgen/train.py` (same as `python -m textgen.train`)."""

from textgen.train import main

if __name__ == "__main__":
    main()
