#!/bin/sh
# The GPU table as measured through the device tool (one H200 here), in two calls; the
# first starts llama.cpp's CUDA build in the background (it outlives the call), the second
# waits for it. Each call runs from the repository root with .gpu/ carried:
#   .gpu/llama.cpp-cuda.tar.xz  vendor/llama.cpp of llama-cpp-python 0.3.36's sdist without
#                               models/ docs/ media/ tests/ examples/ and the non-CUDA backends
#   .gpu/whl/torchao-0.18.0-*.whl, .gpu/tiny-llama/ (the demo's trained model), .gpu/heldout.txt
# Usage: sh benchmarks/gpu.sh torch | gguf | torch-b1 | torch-fullgraph | target-convert | target | flow-convert | flow
# (OUT: where rows and logs go)
# torch-b1 is the third call of 2026-11-29: the torch part again at batch 1 on the same warm
# machine (inductor's cache from the first call, no build beside it), without int8-dyn.
set -e
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
# torchao, for the torch stages; the flow stages carry .gpu-flow/ instead.
[ -d .gpu/whl ] && python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
case "$1" in
torch)
  mkdir -p /tmp/ll && tar -xJf .gpu/llama.cpp-cuda.tar.xz -C /tmp/ll
  setsid nohup sh -c 'cd /tmp/ll/llama.cpp && cmake -B build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > /tmp/build.log 2>&1 \
    && cmake --build build -j 12 --target llama-bench llama-quantize >> /tmp/build.log 2>&1; echo $? > /tmp/build.rc' \
    > /dev/null 2>&1 &
  python3 benchmarks/gpu.py quality --out "$OUT" --tiny-llama .gpu/tiny-llama --heldout .gpu/heldout.txt 2>&1 | tee "$OUT/quality.log"
  timeout 500 python3 benchmarks/gpu.py torch --out "$OUT" --shape llama-3-8b 2>&1 | tee "$OUT/torch.log"
  ;;
gguf)
  while [ ! -f /tmp/build.rc ]; do sleep 5; done
  tail -3 /tmp/build.log; cp /tmp/build.log "$OUT/build.log"
  [ "$(cat /tmp/build.rc)" = 0 ]
  python3 benchmarks/gpu.py gguf --out "$OUT" --llama-cpp /tmp/ll/llama.cpp --build /tmp/ll/llama.cpp/build \
    --tokenizer .gpu/tiny-llama 2>&1 | tee "$OUT/gguf.log"
  ;;
torch-b1)
  timeout 560 python3 benchmarks/gpu.py torch --out "$OUT" --shape llama-3-8b \
    --configs bf16,int4-wo-g128-tile,fp8-dyn-perrow,int8-wo --batches 1 2>&1 | tee "$OUT/torch-b1.log"
  ;;
torch-fullgraph)
  # The torch part once more with the decode step compiled as one graph (fullgraph=True), to
  # see whether torchao's losses above came from graph breaks under generate's default compile.
  timeout 560 python3 benchmarks/gpu.py torch --out "$OUT" --shape llama-3-8b --compile-mode reduce-overhead \
    --configs bf16,int4-wo-g128-tile,fp8-dyn-perrow --batches 1 2>&1 | tee "$OUT/torch-fullgraph.log"
  ;;
target-convert)
  # quantmill's gpu target (benchmarks/gpu_target.py), first call: llama.cpp's shared
  # libraries built with CUDA in the background, the models made and converted meanwhile.
  # Also carried: .gpu/py/llama_cpp and .gpu/py/diskcache, llama-cpp-python 0.3.36's Python
  # package without its lib/ and its one dependency missing there.
  mkdir -p /tmp/ll && tar -xJf .gpu/llama.cpp-cuda.tar.xz -C /tmp/ll
  setsid nohup sh -c 'cd /tmp/ll/llama.cpp && cmake -B build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > /tmp/build.log 2>&1 \
    && cmake --build build -j 14 --target llama llama-bench >> /tmp/build.log 2>&1; echo $? > /tmp/build.rc' \
    > /dev/null 2>&1 &
  export QUANTMILL_LLAMA_CPP_SRC=/tmp/ll/llama.cpp PYTHONPATH=.gpu/py:/tmp/ll/llama.cpp/gguf-py:$PYTHONPATH
  python3 benchmarks/gpu_target.py --stage convert --work /tmp/target-work --out "$OUT" \
    --tiny-llama .gpu/tiny-llama --heldout .gpu/heldout.txt 2>&1 | tee "$OUT/target-convert.log"
  ;;
target)
  while [ ! -f /tmp/build.rc ]; do sleep 5; done
  tail -3 /tmp/build.log; cp /tmp/build.log "$OUT/build.log"
  [ "$(cat /tmp/build.rc)" = 0 ]
  export LLAMA_CPP_LIB_PATH=$(dirname "$(find /tmp/ll/llama.cpp/build -name libllama.so | head -1)")
  export QUANTMILL_LLAMA_CPP_SRC=/tmp/ll/llama.cpp PYTHONPATH=.gpu/py:/tmp/ll/llama.cpp/gguf-py:$PYTHONPATH
  python3 benchmarks/gpu_target.py --stage all --work /tmp/target-work --out "$OUT" --tiny-llama .gpu/tiny-llama \
    --heldout .gpu/heldout.txt --llama-bench /tmp/ll/llama.cpp/build/bin/llama-bench 2>&1 | tee "$OUT/target.log"
  ;;
flow-convert)
  # The gpu target through the benchmark-on-hardware flow itself (Prefect's temporary server
  # on the GPU machine), first call: llama.cpp's CUDA libraries built in the background, the
  # 8B-shaped model made and converted meanwhile. Carried in .gpu-flow/: the llama.cpp tarball,
  # py/ (llama-cpp-python's package and diskcache), tok/ (the tiny Llama's tokenizer and
  # config, no weights), heldout.txt, and whl-prefect/ (prefect 3.8.8 and the wheels it needs
  # that the machine lacks, for Python 3.12).
  mkdir -p /tmp/ll && tar -xJf .gpu-flow/llama.cpp-cuda.tar.xz -C /tmp/ll
  setsid nohup sh -c 'cd /tmp/ll/llama.cpp && cmake -B build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > /tmp/build.log 2>&1 \
    && cmake --build build -j 15 --target llama >> /tmp/build.log 2>&1; echo $? > /tmp/build.rc' \
    > /dev/null 2>&1 &
  export QUANTMILL_LLAMA_CPP_SRC=/tmp/ll/llama.cpp PYTHONPATH=.gpu-flow/py:/tmp/ll/llama.cpp/gguf-py:$PYTHONPATH
  # Prefect installed and the flow imported now, so that a missing wheel shows before the build's wait.
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu-flow/whl-prefect/*.whl
  python3 -c "import flows.benchmark_on_hardware; print('flow imports')" 2>&1 | tail -3 | tee "$OUT/flow-import.log"
  python3 benchmarks/gpu_target.py --stage convert --work /tmp/target-work --out "$OUT" --shapes llama-3-8b \
    --tiny-llama .gpu-flow/tok --heldout .gpu-flow/heldout.txt 2>&1 | tee "$OUT/flow-convert.log"
  ;;
flow)
  while [ ! -f /tmp/build.rc ]; do sleep 5; done
  tail -3 /tmp/build.log; cp /tmp/build.log "$OUT/build.log"
  [ "$(cat /tmp/build.rc)" = 0 ]
  export LLAMA_CPP_LIB_PATH=$(dirname "$(find /tmp/ll/llama.cpp/build -name libllama.so | head -1)")
  export QUANTMILL_LLAMA_CPP_SRC=/tmp/ll/llama.cpp PYTHONPATH=.gpu-flow/py:/tmp/ll/llama.cpp/gguf-py:$PYTHONPATH
  export PREFECT_HOME=/tmp/prefect-home PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 QUANTMILL_HOME=/tmp/qm-home
  python3 benchmarks/gpu_target.py --stage all --via-flow --work /tmp/target-work --out "$OUT" --shapes llama-3-8b \
    --tiny-llama .gpu-flow/tok --heldout .gpu-flow/heldout.txt 2>&1 | tee "$OUT/flow.log"
  ;;
esac
