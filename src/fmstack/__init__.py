"""fmstack: a local-first AI engineering stack (application, model and infrastructure layers in one package)."""

__version__ = "0.1.0"
