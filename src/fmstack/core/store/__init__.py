"""The one store: traces and feedback now; datasets, prompts and eval runs as later migrations add them."""

from fmstack.core.store.db import open_store
from fmstack.core.store.schema import Feedback, Trace

__all__ = ["Feedback", "Trace", "open_store"]
