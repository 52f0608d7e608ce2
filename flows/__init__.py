"""Prefect flows composed from the tasks in tasks/."""

import os

# quantmill often runs where nothing outside is reachable: no usage reports from Prefect or MLflow.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
