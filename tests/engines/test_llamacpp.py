"""Loading a GGUF model (`load_gguf`): every loader of fmstack (the engine, `model compare`, `--imatrix`) uses it."""

from __future__ import annotations

import os
import sys

import llama_cpp.llama_cpp as bindings

from fmstack.core.config import get_settings
from fmstack.core.registry import Registry
from fmstack.engines.llamacpp import load_gguf
from tests.conftest import TEST_MODEL


def test_loading_leaves_the_process_stdout_and_stderr_alone(monkeypatch):
    """llama-cpp-python's `verbose=False` points sys.stdout and file descriptors 1 and 2 at /dev/null during a
    load; two loads in two threads put them back in the wrong order, for good (`model compare --json`, which
    loads its variants at once, once printed nothing)."""
    seen = []
    load = bindings.llama_model_load_from_file

    def spy(*args):
        seen.append((sys.stdout, sys.stderr, os.fstat(1).st_ino, os.fstat(2).st_ino))
        return load(*args)

    monkeypatch.setattr(bindings, "llama_model_load_from_file", spy)
    before = (sys.stdout, sys.stderr, os.fstat(1).st_ino, os.fstat(2).st_ino)
    settings = get_settings()
    model = load_gguf(Registry(settings).get(TEST_MODEL).local_path(settings))
    try:
        assert model.n_vocab() > 0
        assert seen == [before]
    finally:
        model.close()
