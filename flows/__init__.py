"""Prefect flows composed from the tasks in tasks/."""

import os

# quantmill often runs where nothing outside is reachable: no usage reports from Prefect or MLflow.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# On the embedded default each process starts Prefect's ephemeral API; its first start makes
# the database, which can take longer than Prefect's 20 s default on a busy 2-core machine
# (seen: "Timed out while attempting to connect to ephemeral Prefect API server").
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
