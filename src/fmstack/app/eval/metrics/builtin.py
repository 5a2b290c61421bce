"""The built-in metrics: importing a module registers its metrics (`base._load_builtins` imports this module)."""

from fmstack.app.eval.metrics import (  # noqa: F401  (register on import)
    deterministic,
    functional,
    judge,
    lexical,
    rag,
    semantic,
)
