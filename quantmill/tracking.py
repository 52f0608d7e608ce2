"""MLflow: where runs and registered models live, reading registered models, recording a
run's evidence, and registering a model that passed its gate."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from quantmill.errors import InputError

EXPERIMENT = "quantmill"
CALIBRATION_SAMPLE = "calibration/calibration_sample.npz"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


@dataclass(frozen=True)
class Registration:
    """A registered quantized model: its MLflow run, registered name, version and alias."""

    run_id: str
    registered_model: str | None
    version: str | None
    alias: str | None


def quantmill_home() -> Path:
    """Return the project-local state folder: $QUANTMILL_HOME, else ./.quantmill."""
    return Path(os.environ.get("QUANTMILL_HOME", ".quantmill")).resolve()


def output_dir(path: str) -> Path:
    """Return path if absolute, else path under quantmill_home(): a deployment's relative
    out_dir lands in the worker's state folder, not wherever its process started."""
    return Path(path) if Path(path).is_absolute() else quantmill_home() / path


def tracking_uri() -> str:
    """Return $MLFLOW_TRACKING_URI, else a SQLite store under quantmill_home()."""
    home = quantmill_home()
    home.mkdir(parents=True, exist_ok=True)
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"


def client():
    """Return an MlflowClient on tracking_uri(), with the experiment's artifacts kept under
    quantmill_home() when the store is the local default."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = None if os.environ.get("MLFLOW_TRACKING_URI") else (quantmill_home() / "mlartifacts").as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return MlflowClient(uri, registry_uri=uri)


def download_registered_model(uri: str, dest: Path) -> tuple[Path, str, str]:
    """Download the registered model named by uri (models:/NAME/VERSION or models:/NAME@ALIAS)
    into dest; return (local folder, name, version). Raises InputError if it does not exist."""
    import mlflow
    from mlflow.exceptions import MlflowException

    match = _URI.match(uri)
    if not match:
        raise InputError(uri, "not a model URI of the form models:/NAME/VERSION or models:/NAME@ALIAS")
    registry = client()
    name = match["name"]
    try:
        version = (
            registry.get_model_version(name, match["version"]) if match["version"]
            else registry.get_model_version_by_alias(name, match["alias"])
        )
    except MlflowException as err:
        raise InputError(uri, f"not in the MLflow registry at {tracking_uri()} ({err.message.splitlines()[0]})") from None
    local = dest / f"{name}-v{version.version}"
    if not (local / "MLmodel").exists():
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version.version}", dst_path=str(local))
    return local, name, str(version.version)


def record_run(
    report: dict, report_path: Path, artifact_dir: Path | None, register_as: str | None, alias: str | None,
    calibration_sample: Path | None = None,
) -> Registration:
    """Log report's params, metrics and files as one MLflow run, with the calibration
    samples used (CALIBRATION_SAMPLE, the statistics the recalibration sweep compares fresh
    data with); when register_as is given, register the artifact in artifact_dir as a new
    version of that model with tags and the alias. Returns what was recorded. MLflow's
    errors pass through."""
    import mlflow

    registry = client()
    model = report["model"]
    run_name = f"{model['name']}-v{model['version'] or 'file'}"
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params(_params(report))
        mlflow.log_metrics(_metrics(report))
        mlflow.set_tags({
            "quantmill.gate": report["gate"]["status"], "quantmill.source_sha256": model["sha256"],
            "quantmill.source_model": model["name"], "quantmill.source_version": str(model["version"]),
        })
        mlflow.log_artifact(str(report_path))
        if calibration_sample is not None:
            mlflow.log_artifact(str(calibration_sample), artifact_path=str(Path(CALIBRATION_SAMPLE).parent))
        if artifact_dir is not None:
            mlflow.log_artifacts(str(artifact_dir), artifact_path="chosen_artifact")
        if register_as is None:
            return Registration(run.info.run_id, None, None, None)
        chosen = next(a for a in report["attempts"] if a["index"] == report["gate"]["chosen_attempt"])
        if chosen["path"].endswith(".onnx"):
            import onnx

            info = mlflow.onnx.log_model(
                onnx_model=onnx.load(chosen["path"]), name="quantized_model", registered_model_name=register_as,
                save_as_external_data=False,
            )
            version = str(info.registered_model_version)
        else:
            # No MLflow flavor loads GGUF: the version points at the logged artifact folder.
            version = _register_files(registry, register_as, mlflow.get_artifact_uri("chosen_artifact"), run.info.run_id)
    for key, value in {
        "source_model": model["name"], "source_version": str(model["version"]), "source_sha256": model["sha256"],
        "format": chosen["format"], "gate_status": report["gate"]["status"],
        "accuracy_drop": f"{chosen['accuracy_drop']:.4f}", "artifact_sha256": chosen["sha256"],
    }.items():
        registry.set_model_version_tag(register_as, version, key, value)
    if alias:
        registry.set_registered_model_alias(register_as, alias, version)
    return Registration(run.info.run_id, register_as, version, alias)


def _register_files(registry, name: str, source: str, run_id: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        registry.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return str(registry.create_model_version(name, source, run_id=run_id).version)


def _params(report: dict) -> dict[str, str]:
    cal = report["calibration"]
    return {
        "model_uri": report["model"]["uri"], "model_sha256": report["model"]["sha256"],
        "family": report["model"]["family"], "task": report["task"], "target": report["target"],
        "max_accuracy_drop": str(report["max_accuracy_drop"]), "hardware": report["hardware"]["description"][:500],
        "calibration_sha256": cal["data_sha256"], "evaluation_sha256": report["evaluation_data"]["sha256"],
        "candidates": ",".join(c["format"] for c in report["candidates"]),
    }


def _metrics(report: dict) -> dict[str, float]:
    cal = report["calibration"]
    metrics = {
        "calibration.ks_statistic": cal["ks_statistic"], "calibration.ks_pvalue": cal["ks_pvalue"],
        "calibration.in_range_fraction": cal["in_range_fraction"],
    }
    metrics |= _numbers("baseline", report["baseline"]["benchmark"] or {})
    for a in report["attempts"]:
        prefix = f"attempt{a['index']}"
        metrics |= {f"{prefix}.quantized_metric": a["quantized_metric"], f"{prefix}.accuracy_drop": a["accuracy_drop"],
                    f"{prefix}.size_bytes": a["size_bytes"]}
        metrics |= _numbers(prefix, a["benchmark"] or {})
    return metrics


def _numbers(prefix: str, values: dict) -> dict[str, float]:
    found = {}
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            found |= _numbers(name, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[name] = float(value)
    return found


def register_source_model(path: Path, name: str) -> str:
    """Register the model at path under name and return the new version, unless the latest
    version already holds the same weights (tag source_sha256), whose version is returned.

    path is an ONNX file (onnx flavor) or a Hugging Face directory (transformers flavor).
    Raises InputError when path is neither.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from quantmill.hashing import sha256_file, sha256_files

    registry = client()
    if path.is_file() and path.suffix == ".onnx":
        digest = sha256_file(path)
    elif path.is_dir() and list(path.glob("*.safetensors")):
        digest = sha256_files(path.glob("*.safetensors"), path)
    else:
        raise InputError(path, "neither an ONNX file nor a Hugging Face directory with safetensors weights")
    try:
        latest = registry.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"], max_results=1)
    except MlflowException:
        latest = []
    if latest and latest[0].tags.get("source_sha256") == digest:
        return str(latest[0].version)
    with mlflow.start_run(run_name=f"register-{name}"):
        if path.is_file():
            import onnx

            info = mlflow.onnx.log_model(onnx_model=onnx.load(str(path)), name="model", registered_model_name=name)
        else:
            import json

            from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

            architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
            causal = any(a.endswith("ForCausalLM") for a in architectures)
            components = {
                "model": (AutoModelForCausalLM if causal else AutoModel).from_pretrained(
                    path, use_safetensors=True, trust_remote_code=False
                ),
                "tokenizer": AutoTokenizer.from_pretrained(path, trust_remote_code=False),
            }
            from importlib.metadata import version as installed

            # Stated outright: MLflow's inference of requirements imports torchvision,
            # which an encoder does not need.
            requirements = [f"{pkg}=={installed(pkg)}" for pkg in ("torch", "transformers", "tokenizers")]
            info = mlflow.transformers.log_model(
                components, name="model", task="text-generation" if causal else "feature-extraction",
                registered_model_name=name,
                pip_requirements=requirements,
            )
    version = str(info.registered_model_version)
    registry.set_model_version_tag(name, version, "source_sha256", digest)
    return version


def model_version_tags(name: str, version: str) -> dict[str, str]:
    """Return the tags of registered model version name/version. MLflow's errors pass through."""
    return dict(client().get_model_version(name, version).tags)


def tag_model_version(name: str, version: str, key: str, value: str) -> None:
    """Set one tag on registered model version name/version. MLflow's errors pass through."""
    client().set_model_version_tag(name, version, key, value)


def ensure_registry_webhook(url: str, secret: str, events: tuple[str, ...], name: str = "quantmill") -> str:
    """Create (or, when one of that name exists, update) the MLflow registry webhook that
    posts events to url signed with secret; return its id. Needs a tracking server with a
    database backend: MLflow raises for other stores."""
    registry = client()
    for hook in registry.list_webhooks():
        if hook.name == name:
            return registry.update_webhook(hook.webhook_id, url=url, events=list(events), secret=secret, status="ACTIVE").webhook_id
    return registry.create_webhook(name=name, url=url, events=list(events), secret=secret).webhook_id


@dataclass(frozen=True)
class AliasedVersion:
    """A registered model version that carries an alias, with its tags and its run."""

    name: str
    version: str
    alias: str
    run_id: str | None
    tags: dict[str, str]


def versions_with_alias(alias: str) -> list[AliasedVersion]:
    """Return every registered model version carrying alias, by model name. MLflow's errors pass through."""
    registry = client()
    found = []
    for model in registry.search_registered_models(max_results=1000):
        version = (model.aliases or {}).get(alias)
        if version is not None:
            mv = registry.get_model_version(model.name, version)
            found.append(AliasedVersion(model.name, str(mv.version), alias, mv.run_id, dict(mv.tags)))
    return sorted(found, key=lambda v: v.name)


def download_run_file(run_id: str, artifact_path: str, dest: Path) -> Path:
    """Download one file logged by run run_id into dest and return its local path. Raises
    InputError when the run has no such file."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dest)))
    except (MlflowException, OSError) as err:
        raise InputError(f"runs:/{run_id}/{artifact_path}", f"cannot be downloaded ({str(err).splitlines()[0]})") from None
