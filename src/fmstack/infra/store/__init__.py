"""The one store: traces and feedback now; datasets, prompts and eval runs as later migrations add them."""

from fmstack.infra.store.db import open_store
from fmstack.infra.store.schema import Feedback, Trace

__all__ = ["Feedback", "Trace", "open_store"]
