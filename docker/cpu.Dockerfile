# CPU worker image: the project with CPU-only torch, running a Prefect worker on pool `cpu`.
# Build from the repository root: docker build -f docker/cpu.Dockerfile -t quantmill-cpu .
FROM python:3.11-slim
WORKDIR /opt/quantmill
ENV QUANTMILL_ROOT=/opt/quantmill PIP_NO_CACHE_DIR=1
COPY pyproject.toml constraints.txt README.md ./
COPY quantmill quantmill
COPY tasks tasks
COPY flows flows
COPY benchmark_tables benchmark_tables
COPY deployments deployments
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c constraints.txt '.[server]'
CMD ["prefect", "worker", "start", "--pool", "cpu"]
