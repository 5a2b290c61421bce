"""Infrastructure layer: model registry and sources, the store, metrics and the server."""
