#!/usr/bin/env bash
# quantmill's GPU worker, built by one command and run by another, on a machine with an
# NVIDIA GPU, CUDA (nvcc), CMake, ninja, Python 3.12 and PyTorch, and no network (the
# device tool's machines). What it needs travels in .gpu-worker/ (under 64 MiB, one carry):
#   whl/               Prefect and every wheel its closure needs, pinned by constraints.txt
#                      (fastapi 0.150.0, sqlalchemy 2.0.58 among them), gguf, torchao,
#                      diskcache; numpy and torch are the machine's own
#   llama.cpp.tar.xz   llama-cpp-python's vendor/llama.cpp (the version constraints.txt pins)
#                      without models, docs, tests, examples and the non-CUDA backends, keeping
#                      app/, tools/, gguf-py/ and the converter; and llama-cpp-python's Python
#                      package (llama_cpp/), which loads the CUDA build's libllama
#   tok/               the tiny Llama's tokenizer (the 8B shape's vocabulary) and held-out prose
# and .gpu-worker-lm/, the second carry (the two do not fit one), for torchao's formats:
#   whl/               transformers with its own dependencies as constraints.txt pins them (the
#                      machine's transformers may predate torchao's safetensors support)
#   tiny-llama/        the trained tiny Llama, whose quality the formats are measured on
#
#   bash benchmarks/gpu_worker.sh bundle    here: make .gpu-worker/ and .gpu-worker-lm/
#   bash benchmarks/gpu_worker.sh build     there: install the wheels into $SITE, build llama.cpp
#                                           with CUDA (libllama, llama-bench, llama-perplexity,
#                                           llama-quantize, llama-imatrix) into $WORK, and check
#                                           that quantmill's gpu target is available
#   bash benchmarks/gpu_worker.sh install   there: only install the wheels into $SITE (all that torchao
#                                           and torchao-formats need; build does it too)
#   bash benchmarks/gpu_worker.sh prepare   there, once the llama.cpp tree is unpacked (it may run
#                                           beside the build): the 8B-shaped model and its F16 GGUF
#   bash benchmarks/gpu_worker.sh flow      there, after build: the benchmark-on-hardware flow on
#                                           target gpu (Prefect's temporary server) on 8B-shaped
#                                           GGUFs made by quantmill's formats, and llama-bench on
#                                           the same files (benchmarks/gpu_target.py)
#   bash benchmarks/gpu_worker.sh torchao   there, after install: torchao's compiled static-cache
#                                           decode recipe (benchmarks/gpu_torchao.py)
#   bash benchmarks/gpu_worker.sh torchao-formats
#                                           there, after install, with .gpu-worker-lm/ carried:
#                                           quantmill's torchao formats made, evaluated and
#                                           benchmarked (benchmarks/gpu_torchao_formats.py)
# Every step stops the script at its first failure, naming the step and the end of its log.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.gpu-worker
LM_BUNDLE=.gpu-worker-lm
WORK=${WORK:-/tmp/quantmill-gpu}
SITE=$WORK/site
OUT=${OUT:-$WORK/out}
LLAMA=$WORK/llama.cpp
LOGS=$WORK/logs

step() {  # step NAME COMMAND...: run COMMAND, its output in $LOGS/NAME.log; stop on failure
  local name=$1
  shift
  mkdir -p "$LOGS"
  echo "gpu_worker: $name ..."
  local started=$SECONDS status=0
  # Not `if ! "$@"`: bash ignores errexit inside a function called as a condition, so a failed
  # command in the middle of a step would not fail it. The subshell exits at its first failure.
  set +e
  ( set -e; "$@" ) > "$LOGS/$name.log" 2>&1
  status=$?
  set -e
  if [ "$status" -ne 0 ]; then
    echo "gpu_worker: step '$name' failed (exit status $status); the end of $LOGS/$name.log:" >&2
    tail -25 "$LOGS/$name.log" >&2
    exit 1
  fi
  echo "gpu_worker: $name done in $((SECONDS - started)) s"
}

worker_env() {
  export PYTHONPATH=$SITE:$LLAMA/py:$LLAMA/gguf-py:$PWD${PYTHONPATH:+:$PYTHONPATH}
  export LLAMA_CPP_LIB_PATH=$LLAMA/build/bin
  export QUANTMILL_LLAMA_TOOLS=$LLAMA/build/bin QUANTMILL_LLAMA_CPP_SRC=$LLAMA
  export PREFECT_HOME=$WORK/prefect-home QUANTMILL_HOME=$WORK/quantmill-home
  export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
}

bundle() {
  local version sdist src
  version=$(sed -n 's/^llama-cpp-python==//p' constraints.txt)
  sdist=.quantmill/sdist/llama_cpp_python-$version.tar.gz
  [ -f "$sdist" ] || { echo "gpu_worker: $sdist missing (make llama-src downloads it)" >&2; exit 1; }
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/whl" "$BUNDLE/tok"
  grep -v -E '^(torch|llama-cpp-python|onnxruntime-gpu)==' constraints.txt > "$BUNDLE/constraints.txt"
  # Wheels for the machine's Python 3.12, resolved with quantmill's own pins.
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -c "$BUNDLE/constraints.txt" -d "$BUNDLE/whl" \
    "prefect==$(sed -n 's/^prefect==//p' constraints.txt)" "gguf==$(sed -n 's/^gguf==//p' constraints.txt)" \
    torchao diskcache
  # numpy is the machine's own (PyTorch there is built against it).
  rm -f "$BUNDLE"/whl/numpy-*.whl
  src=$(mktemp -d)
  tar -xzf "$sdist" -C "$src" --strip-components=1 "llama_cpp_python-$version/vendor/llama.cpp" \
    "llama_cpp_python-$version/llama_cpp"
  mv "$src/vendor/llama.cpp" "$src/llama.cpp" && mkdir -p "$src/llama.cpp/py" && mv "$src/llama_cpp" "$src/llama.cpp/py/"
  (cd "$src/llama.cpp" && rm -rf models docs media tests examples pocs benches ci scripts skills requirements grammars \
    && for d in ggml/src/ggml-*/; do case "$d" in *ggml-cpu/|*ggml-cuda/|*ggml-blas/) ;; *) rm -rf "$d";; esac; done)
  tar -cJf "$BUNDLE/llama.cpp.tar.xz" -C "$src" llama.cpp
  rm -rf "$src"
  rm -rf "$LM_BUNDLE" && mkdir -p "$LM_BUNDLE/whl"
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -c "$BUNDLE/constraints.txt" -d "$LM_BUNDLE/whl" transformers sentencepiece
  # Not those the first carry has already, nor numpy (the machine's own).
  for wheel in "$LM_BUNDLE"/whl/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1)
    if [ "$name" = numpy ] || ls "$BUNDLE/whl/$name"-* > /dev/null 2>&1; then rm "$wheel"; fi
  done
  .venv/bin/python - "$BUNDLE/tok" "$LM_BUNDLE" <<'EOF'
import shutil
import sys
from pathlib import Path

from quantmill.state import quantmill_home
from quantmill.zoo.tiny_llama import build_tiny_llama

out = Path(sys.argv[1])
lm = build_tiny_llama(quantmill_home() / "models")
for name in ("tokenizer.model", "tokenizer_config.json"):
    shutil.copy(lm.model_dir / name, out / name)
shutil.copy(lm.heldout_text, out / "heldout.txt")
shutil.copytree(lm.model_dir, Path(sys.argv[2]) / "tiny-llama")
EOF
  local size carry
  for carry in "$BUNDLE" "$LM_BUNDLE"; do
    size=$(du -sb "$carry" | cut -f1)
    echo "gpu_worker: $carry is $((size / 1048576)) MiB ($(ls "$carry/whl" | wc -l) wheels)"
    [ "$size" -lt $((64 * 1048576)) ] || { echo "gpu_worker: $carry is over the 64 MiB one call carries" >&2; exit 1; }
  done
}

install_wheels() {
  rm -rf "$SITE" && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    "$BUNDLE"/whl/*.whl
}

unpack_llama() {
  rm -rf "$LLAMA" && mkdir -p "$WORK" && tar -xJf "$BUNDLE/llama.cpp.tar.xz" -C "$WORK"
}

configure_llama() {
  cmake -S "$LLAMA" -B "$LLAMA/build" -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
}

build_llama() {
  # Niced, so that a measurement started beside the build keeps its cores.
  nice -n 10 cmake --build "$LLAMA/build" -j "$(nproc)" \
    --target llama llama-bench llama-perplexity llama-quantize llama-imatrix
}

check_worker() {
  worker_env
  # llama-cpp-python is not imported: its CUDA libllama loaded before PyTorch aborts the
  # process (free(): invalid pointer, H100 2026-12-06), and a GPU worker only benchmarks.
  python3 - <<'EOF'
import prefect
import torchao

import flows.benchmark_on_hardware  # noqa: F401
from quantmill.runtimes import get_runtime
from quantmill.targets import get_target

target = get_target("gpu")
print("prefect", prefect.__version__, "torchao", torchao.__version__)
for reason in (target.unavailable(), get_runtime("llama.cpp").unavailable(target)):
    if reason:
        raise SystemExit(f"the gpu target is not available on this worker: {reason}")
print("gpu target available:", get_target("gpu").accelerator(), "|", get_runtime("llama.cpp").describe(target))
EOF
  "$LLAMA/build/bin/llama-bench" --list-devices
}

case "${1:-}" in
bundle)
  bundle
  ;;
build)
  [ -d "$BUNDLE/whl" ] || { echo "gpu_worker: no $BUNDLE/ here (make it with 'bundle' and carry it)" >&2; exit 1; }
  command -v nvcc > /dev/null || { echo "gpu_worker: nvcc not found: CUDA's compiler is needed" >&2; exit 1; }
  step install-wheels install_wheels
  step unpack-llama.cpp unpack_llama
  step configure-llama.cpp configure_llama
  step build-llama.cpp build_llama
  step check-worker check_worker
  cat "$LOGS/check-worker.log"
  ;;
install)
  [ -d "$BUNDLE/whl" ] || { echo "gpu_worker: no $BUNDLE/ here (make it with 'bundle' and carry it)" >&2; exit 1; }
  step install-wheels install_wheels
  ;;
prepare)
  [ -d "$LLAMA/gguf-py" ] || { echo "gpu_worker: no llama.cpp tree at $LLAMA (run 'build' first)" >&2; exit 1; }
  worker_env
  mkdir -p "$OUT"
  nice -n 10 python3 benchmarks/gpu_target.py --stage convert --work "$WORK/target" --out "$OUT" \
    --shapes "${SHAPES:-llama-3-8b}" --tiny-llama "$BUNDLE/tok" --heldout "$BUNDLE/tok/heldout.txt" 2>&1 | tee "$OUT/prepare.log"
  ;;
flow)
  [ -x "$LLAMA/build/bin/llama-bench" ] || { echo "gpu_worker: no worker built at $WORK (run 'build' first)" >&2; exit 1; }
  worker_env
  mkdir -p "$OUT"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
  python3 benchmarks/gpu_target.py --stage all --via-flow --work "$WORK/target" --out "$OUT" \
    --shapes "${SHAPES:-llama-3-8b}" --tiny-llama "$BUNDLE/tok" --heldout "$BUNDLE/tok/heldout.txt" \
    --llama-bench "$LLAMA/build/bin/llama-bench" 2>&1 | tee "$OUT/flow.log"
  ;;
torchao)
  [ -d "$SITE" ] || { echo "gpu_worker: no worker built at $WORK (run 'install' first)" >&2; exit 1; }
  worker_env
  mkdir -p "$OUT"
  python3 benchmarks/gpu_torchao.py --out "$OUT" "${@:2}" 2>&1 | tee "$OUT/torchao.log"
  ;;
torchao-formats)
  [ -d "$SITE" ] || { echo "gpu_worker: no worker built at $WORK (run 'install' first)" >&2; exit 1; }
  [ -d "$LM_BUNDLE/whl" ] || { echo "gpu_worker: no $LM_BUNDLE/ here (carry it)" >&2; exit 1; }
  step install-lm-wheels python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$LM_BUNDLE"/whl/*.whl
  worker_env
  mkdir -p "$OUT"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
  python3 benchmarks/gpu_torchao_formats.py --work "$WORK/torchao-formats" --out "$OUT" \
    --tiny-llama "$LM_BUNDLE/tiny-llama" --heldout "$BUNDLE/tok/heldout.txt" "${@:2}" 2>&1 | tee "$OUT/torchao-formats.log"
  ;;
*)
  sed -n '2,37p' "$0"
  exit 2
  ;;
esac
