"""fmstack: a local-first AI engineering stack — serve models, trace every call, prompts, RAG, evaluation, data
pipelines, training and export — in one package.

Layers, top to bottom; a module imports only from layers below its own (`lint-imports` checks it, `make test`
runs it):

    cli       the `fmstack` command (and the terminal chat)
    server    the HTTP server: OpenAI-compatible API, web UI, metrics
    app       prompts, RAG, evaluation            } side by side:
    model     data pipelines, training, export    } neither imports the other
    gateway   the one traced path from a model name to an answer
    engines   models behind one small interface (llama.cpp, transformers, remote, embeddings)
    core      settings, errors, registry, sources, the store, Prometheus metrics, file helpers
"""

__version__ = "0.1.0"
