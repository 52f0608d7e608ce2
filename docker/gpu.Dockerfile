# GPU worker image: the project with ONNX Runtime's CUDA build and CUDA torch, running a
# Prefect worker on pool `gpu`; benchmark-on-hardware measures with CUDAExecutionProvider.
# Build from the repository root: docker build -f docker/gpu.Dockerfile -t quantmill-gpu .
# Run with the NVIDIA container toolkit (docker run --gpus all ...).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
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
# The same onnxruntime version as the CPU pin, in its CUDA build, so both pools run one
# runtime release and differ only in the execution provider.
RUN pip install --index-url https://download.pytorch.org/whl/cu128 torch==2.13.0 \
 && pip install -c constraints.txt . \
 && make llama-src PY=python LLAMA_NEEDS= \
 && ORT=$(sed -n 's/^onnxruntime==//p' constraints.txt) \
 && pip uninstall -y onnxruntime && pip install "onnxruntime-gpu==${ORT}"
CMD ["prefect", "worker", "start", "--pool", "gpu"]
