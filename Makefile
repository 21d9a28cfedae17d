# Two commands: `make demo` (the offline demo on the embedded local model) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# llama-cpp-python is compiled from source. We build it for a portable x86-64 baseline
# (x86-64-v3: AVX, AVX2, FMA, F16C, BMI2; no AVX-512, no AMX) instead of llama.cpp's default
# `-march=native`, so the library never depends on the CPU of the machine that built it.
# Only the libraries the Python bindings load are built: not the multimodal library (mtmd), and not
# llama.cpp's `common` helpers with their HTTP client, which llama-cpp-python forces on although
# the bindings never load them (a hook file run inside llama.cpp's project turns them off); that
# halves the build. The wheel is built once per version and flags into the user's cache, outside
# pip's own wheel cache (keyed by the source only, it may hold a wheel built natively elsewhere).
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
	-DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF \
	-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
LLAMA_TAG := $(shell printf '%s %s no-common' '$(LLAMA_CPP_VERSION)' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
WHEEL_CACHE ?= $(if $(XDG_CACHE_HOME),$(XDG_CACHE_HOME),$(HOME)/.cache)/qwenloop/wheels
LLAMA_WHEELS := $(WHEEL_CACHE)/llama-cpp-python-$(LLAMA_CPP_VERSION)-x86-64-v3-$(LLAMA_TAG)

.PHONY: test demo lint typecheck pytest bench llama-wheel clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(LLAMA_WHEELS)/.built: | $(BIN)/python
	@echo "Building llama-cpp-python $(LLAMA_CPP_VERSION) for portable x86-64 (once; a few minutes)"
	rm -rf $(LLAMA_WHEELS).tmp && mkdir -p $(LLAMA_WHEELS).tmp
	printf 'set(LLAMA_BUILD_COMMON OFF)\n' > $(LLAMA_WHEELS).tmp/skip-common.cmake
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) \
		-DCMAKE_PROJECT_llama.cpp_INCLUDE=$(LLAMA_WHEELS).tmp/skip-common.cmake" \
		CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
		-w $(LLAMA_WHEELS).tmp 'llama-cpp-python==$(LLAMA_CPP_VERSION)'
	rm -rf $(LLAMA_WHEELS) && mv $(LLAMA_WHEELS).tmp $(LLAMA_WHEELS)
	touch $@

llama-wheel: $(LLAMA_WHEELS)/.built

$(VENV)/.installed: pyproject.toml Makefile $(LLAMA_WHEELS)/.built | $(BIN)/python
	$(BIN)/pip install --quiet --force-reinstall --no-deps --no-index \
		$(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(BIN)/pip install --quiet --find-links $(LLAMA_WHEELS) -e '.[dev,local]'
	touch $@

# The chat page's browser test (tests/test_serve.py) drives Debian's chromium: installed here when
# missing and we are root (CI); elsewhere that test skips and says how to install it.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| command -v google-chrome >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing chromium for the chat page's browser test (once)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: chromium is missing; the page's browser test will skip (apt-get install chromium)"; fi

test: $(VENV)/.installed browser
	$(BIN)/ruff check agent tools tests examples bench
	$(BIN)/ruff format --check agent tools tests examples bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check agent tools tests examples bench
	$(BIN)/ruff format --check agent tools tests examples bench

demo: $(VENV)/.installed
	$(BIN)/python examples/offline_demo.py

bench: $(VENV)/.installed
	$(BIN)/python bench/loop_overhead.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
