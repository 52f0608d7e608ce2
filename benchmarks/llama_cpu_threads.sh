#!/bin/sh
# Run on the device tool's machine after `sh benchmarks/llama_cpu_buffers.sh start` and `run`
# (same warm machine): Q4_K_M and Q8_0 with llama.cpp's extra buffers on and off, a 160-token
# batch, at 2, 1 and 4 threads pinned with taskset; prints rc and whether the logits are finite.
# The exact command behind the README's "with 16, 4, 2 and 1 threads" (16: llama_cpu_buffers.py).
NATIVE=/tmp/amx/src/llama.cpp/build-native/bin; export LLAMA_CPP_LIB_PATH=$NATIVE PYTHONPATH=/tmp/amx/py:.
for t in 2 1 4; do for f in Q4_K_M Q8_0; do for r in True False; do timeout 120 taskset -c 0-$((t-1)) python3 -c "
import ctypes; ctypes.CDLL('$NATIVE/libllama.so', mode=ctypes.RTLD_GLOBAL)
import math
from quantmill.llama_buffers import load
llm = load('/tmp/amx/gguf/smollm2-135m-$f.gguf', $r, n_ctx=300, n_batch=160, n_threads=$t, logits_all=True)
llm.eval(list(range(5, 165)))
print('ok', all(math.isfinite(float(x)) for x in llm.scores[159][:1000]))
" > /tmp/o.txt 2>&1; echo "threads=$t $f repack=$r rc=$? $(tail -1 /tmp/o.txt)"; done; done; done
