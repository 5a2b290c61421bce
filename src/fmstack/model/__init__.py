"""Model layer: converting between model formats now; data pipelines and training come next."""
