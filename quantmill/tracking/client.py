"""Where MLflow's runs and registered models live: $MLFLOW_TRACKING_URI, else a SQLite store
under quantmill's state folder."""

from __future__ import annotations

import os

from quantmill.state import quantmill_home

EXPERIMENT = "quantmill"


def tracking_uri() -> str:
    """Return $MLFLOW_TRACKING_URI, else a SQLite store under quantmill_home()."""
    home = quantmill_home()
    home.mkdir(parents=True, exist_ok=True)
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"


def client():
    """Return an MlflowClient on tracking_uri(), the quantmill experiment made if missing.

    A tracking server chooses where artifacts go; for a local store (SQLite or a folder)
    they go under quantmill_home(), never to MLflow's fallback ./mlruns in whatever folder
    the process started in.
    """
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        served = uri.startswith(("http://", "https://", "databricks"))
        location = None if served else (quantmill_home() / "mlartifacts").as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return MlflowClient(uri, registry_uri=uri)
