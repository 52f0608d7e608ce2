# GPU worker image: the project with ONNX Runtime's CUDA build, CUDA torch and llama.cpp
# built with CUDA, running a Prefect worker on pool `gpu`; benchmark-on-hardware measures
# ONNX models with CUDAExecutionProvider, GGUF with every layer on the GPU, and torchao's
# formats (torchao, the project's `gpu` extra) in PyTorch on the GPU.
# Build from the repository root: docker build -f docker/gpu.Dockerfile -t quantmill-gpu .
# Run with the NVIDIA container toolkit (docker run --gpus all ...).
# The devel image: llama-cpp-python has no CUDA wheels and compiles with nvcc.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev ca-certificates \
    build-essential cmake make \
 && rm -rf /var/lib/apt/lists/* && python3.11 -m venv /opt/venv
ENV QUANTMILL_LLAMA_CPP_SRC=/opt/quantmill/.quantmill/llama.cpp PATH=/opt/venv/bin:$PATH QUANTMILL_ROOT=/opt/quantmill PIP_NO_CACHE_DIR=1
WORKDIR /opt/quantmill
COPY pyproject.toml constraints.txt README.md Makefile ./
COPY quantmill quantmill
COPY tasks tasks
COPY flows flows
COPY benchmark_tables benchmark_tables
COPY deployments deployments
# onnxruntime's CUDA build, pinned in constraints.txt: 1.31.1, as the registry has no CUDA
# build of the CPU pools' 1.32.0. Reports name the runtime version that measured.
RUN pip install --index-url https://download.pytorch.org/whl/cu128 torch==2.13.0 \
 && pip install -c constraints.txt ".[gpu]" \
 && make llama-src PY=python LLAMA_NEEDS= \
 && pip uninstall -y onnxruntime && pip install -c constraints.txt onnxruntime-gpu \
 && CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=80;86;89;90" \
    pip install --force-reinstall --no-deps --no-binary llama-cpp-python -c constraints.txt llama-cpp-python
# Runs as an unprivileged user: the code is root's and read-only to it; /data (the shared
# volume: QUANTMILL_HOME, inputs) and its home are its own. A fresh named volume takes
# /data's ownership from the image.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin quantmill \
 && mkdir -p /data/home /data/inputs && chown -R 10001:10001 /data
USER 10001
CMD ["prefect", "worker", "start", "--pool", "gpu"]
