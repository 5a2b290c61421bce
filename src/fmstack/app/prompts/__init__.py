"""Versioned prompts: Jinja2 templates (system, user, few-shot examples) with model parameters, stored as immutable
numbered versions with movable aliases, rendered strictly, and traced when a model is called through them.

```python
from fmstack.app import prompts

store = prompts.PromptStore.open()
store.save("capitals", {"user": "Capital of {{ country }}?", "params": {"temperature": 0}})   # version 1
store.set_alias("capitals", "production", 1)
prompts.render("capitals@production", {"country": "France"}).messages
prompts.complete("capitals@production", {"country": "France"}, model="smollm2-135m-instruct")
```

`template` (a prompt's content, rendered strictly), `refs` (names, versions and aliases), `store` (versions and
aliases in the store) and `client` (render, or call a model through a prompt with the call traced).

Layer: imports `fmstack.gateway` (the model call) and `fmstack.core`; `fmstack.app.eval`, the server and the
CLI import it.
"""

from fmstack.app.prompts.client import Completion, Prompts, Rendered, complete, default, render
from fmstack.app.prompts.refs import PromptError, PromptRef, parse_ref
from fmstack.app.prompts.store import (
    AliasMove,
    PromptNotFound,
    PromptStore,
    PromptSummary,
    Saved,
    StoredPrompt,
    diff_prompts,
)
from fmstack.app.prompts.template import Example, MissingVariable, PromptContent, PromptParams

__all__ = [
    "AliasMove",
    "Completion",
    "Example",
    "MissingVariable",
    "PromptContent",
    "PromptError",
    "PromptNotFound",
    "PromptParams",
    "PromptRef",
    "PromptStore",
    "PromptSummary",
    "Prompts",
    "Rendered",
    "Saved",
    "StoredPrompt",
    "complete",
    "default",
    "diff_prompts",
    "parse_ref",
    "render",
]
