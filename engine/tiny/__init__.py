"""phi4-tiny, the embedded default model: shipped weights (``phi4-tiny-v*/``), their builder and training data."""
