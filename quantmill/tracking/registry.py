"""Reading the MLflow model registry: downloading a registered version, its tags, the
versions carrying an alias, files logged by a run; and tagging a version."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from quantmill.errors import InputError, QuantmillError
from quantmill.tracking.client import client, tracking_uri

REGISTRY_SCHEME = "models:/"
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"}
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


def check_alias(alias: str) -> str:
    """Return alias when MLflow's registry would take it. Raises QuantmillError with MLflow's
    reason: a name of other characters, or a reserved one ('latest', 'v1', 'v2', ...)."""
    from mlflow.exceptions import MlflowException
    # MLflow's own checks, which set_registered_model_alias runs only once a version exists.
    from mlflow.utils.validation import _validate_model_alias_name, _validate_model_alias_name_reserved

    try:
        _validate_model_alias_name(alias)
        _validate_model_alias_name_reserved(alias)
    except MlflowException as err:
        raise QuantmillError(f"alias {alias!r} cannot be set in MLflow's registry: {err.message}") from None
    return alias


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
        # Only "no such model or version" is the user's to fix; a store that is down or
        # answering 5xx passes through, to be retried.
        if err.error_code not in _NOT_FOUND:
            raise
        raise InputError(uri, f"not in the MLflow registry at {tracking_uri()} ({err.message.splitlines()[0]})") from None
    local = dest / f"{name}-v{version.version}"
    if not local.exists():
        # Downloaded beside its place and renamed in whole: an interrupted download leaves
        # no folder that a later run would take for the model.
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{local.name}.", dir=dest))
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version.version}", dst_path=str(staging))
            # mkdtemp makes the folder 0700; the model in it is read like any other download.
            staging.chmod(0o755)
            os.replace(staging, local)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return local, name, str(version.version)


def read_mlmodel(local: Path) -> dict:
    """Return the parsed MLmodel file of a downloaded registry model. Raises InputError if absent."""
    import yaml

    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        raise InputError(local, "downloaded registry model has no MLmodel file")
    return yaml.safe_load(mlmodel.read_text())


def transformers_weights_dir(local: Path) -> Path:
    """Return the Hugging Face directory inside a downloaded transformers-flavor model, with
    its tokenizer files beside the weights. Raises InputError when the weights were not saved."""
    model_dir = local / "model"
    if not model_dir.is_dir():
        raise InputError(local, "transformers flavor without saved weights (save_pretrained=False)")
    tokenizer = local / "components" / "tokenizer"
    if tokenizer.is_dir():
        for item in tokenizer.iterdir():
            if not (model_dir / item.name).exists():
                shutil.copy2(item, model_dir / item.name)
    return model_dir


def latest_version(name: str):
    """Return the newest version of registered model name, or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        found = client().search_model_versions(f"name = '{name}'", order_by=["version_number DESC"], max_results=1)
    except MlflowException:
        return None
    return found[0] if found else None


def register_folder(name: str, source: str, run_id: str) -> str:
    """Create a version of registered model name (creating the model if new) pointing at the
    logged artifact folder source; return the version. For artifacts no MLflow flavor loads."""
    from mlflow.exceptions import MlflowException

    registry = client()
    try:
        registry.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return str(registry.create_model_version(name, source, run_id=run_id).version)


def model_version_tags(name: str, version: str) -> dict[str, str]:
    """Return the tags of registered model version name/version. MLflow's errors pass through."""
    return dict(client().get_model_version(name, version).tags)


def tag_model_version(name: str, version: str, key: str, value: str) -> None:
    """Set one tag on registered model version name/version. MLflow's errors pass through."""
    client().set_model_version_tag(name, version, key, value)


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
