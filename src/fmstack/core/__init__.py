"""The bottom layer: what every other layer stands on and that depends on none of them.

Settings (`config`), the error types that become HTTP and CLI errors (`errors`), the model registry and where its
files come from (`registry`, `sources`), the one store with its migrations (`store`), Prometheus metrics
(`metrics`) and small file helpers (`yamlfile`, `htmlpage`). Layer: imports nothing from fmstack outside `core`.
"""
