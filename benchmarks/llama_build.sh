#!/bin/sh
# CPU and wall seconds of pip building llama-cpp-python (the version constraints.txt pins)
# from its source distribution, as `make` does on a fresh machine: once with its defaults and
# once as the Makefile builds it (-DLLAVA_BUILD=OFF: no multimodal library, which quantmill
# never loads; llama_cpp imports it only for multimodal chat handlers). CPU seconds
# (user + sys of every compiler process) stay comparable on a loaded machine; wall does not.
# Usage: sh benchmarks/llama_build.sh [WORKDIR]   (about 8 + 6 minutes on 2 idle cores)
set -e
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^llama-cpp-python==//p' constraints.txt)
WORK=${1:-/tmp/llama-build}
rm -rf "$WORK" && mkdir -p "$WORK"
.venv/bin/python -m pip download -q --no-deps --no-binary :all: -d "$WORK" "llama-cpp-python==$VERSION"
for mode in default trimmed; do
  args=""; [ "$mode" = trimmed ] && args="-DLLAVA_BUILD=OFF"
  CMAKE_ARGS="$args" /usr/bin/time -f "$mode: wall %e s, cpu %U s user + %S s sys" -a -o "$WORK/times" \
    .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir "$WORK/llama_cpp_python-$VERSION.tar.gz" -w "$WORK/$mode"
done
cat "$WORK/times"
