"""The one traced path from a model name to an answer, shared by every caller.

A model name, a `GenerationRequest` and a `CallContext` (app, user, stored prompt, route and variant, API key, eval
run) go in; a stream of text deltas comes out, and the call ends as exactly one trace row, with metrics and cost.
The HTTP routes, stored prompts, RAG, the eval runner and the terminal chat all go through `Gateway`, so a feature
added here (batching, A/B routes, review policies, keys) reaches all of them at once.

```python
from fmstack.gateway import CallContext, Gateway, generation_request

gateway = Gateway.open()
messages = [{"role": "user", "content": "Say hi"}]
answer = gateway.complete_sync("smollm2-135m-instruct", generation_request(messages, {"max_tokens": 20}),
                               CallContext(app="my-script"))
print(answer.text, answer.trace_id)
gateway.close()  # waits until every trace is committed
```

Layer: imports `fmstack.engines` and `fmstack.core` only; `fmstack.app`, `fmstack.model`, `fmstack.server` and
`fmstack.cli` import it.
"""

from fmstack.gateway.call import Call, CallContext
from fmstack.gateway.params import generation_request
from fmstack.gateway.service import Answer, Gateway

__all__ = ["Answer", "Call", "CallContext", "Gateway", "generation_request"]
