# CPU worker image: the project with CPU-only torch, running a Prefect worker on pool `cpu`.
# Build from the repository root: docker build -f docker/cpu.Dockerfile -t quantmill-cpu .
FROM python:3.11-slim
# llama-cpp-python ships no wheels here: it is built from source.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/quantmill
ENV QUANTMILL_LLAMA_CPP_SRC=/opt/quantmill/.quantmill/llama.cpp QUANTMILL_ROOT=/opt/quantmill PIP_NO_CACHE_DIR=1
COPY pyproject.toml constraints.txt README.md Makefile ./
COPY quantmill quantmill
COPY tasks tasks
COPY flows flows
COPY benchmark_tables benchmark_tables
COPY deployments deployments
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c constraints.txt '.[server]' \
 && make llama-src PY=python LLAMA_NEEDS=
# Runs as an unprivileged user: the code is root's and read-only to it; /data (the shared
# volume: QUANTMILL_HOME, inputs) and its home are its own. A fresh named volume takes
# /data's ownership from the image.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin quantmill \
 && mkdir -p /data/home /data/inputs && chown -R 10001:10001 /data
USER 10001
CMD ["prefect", "worker", "start", "--pool", "cpu"]
