"""Artifacts on S3 (or any S3-compatible store) through boto3.

Every file is uploaded with its SHA-256, which S3 checks on receipt, and read back with
HEAD to confirm; the artifact's manifest.json is written last, so an artifact without a
manifest is incomplete and is never read as whole. boto3's standard retry mode rides out a
store that stops answering for a while.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from quantmill.hashing import sha256_file

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class S3Location:
    """Where artifacts go: bucket, key prefix, and an endpoint for S3-compatible stores
    (None: AWS, or boto3's own AWS_ENDPOINT_URL setting)."""

    bucket: str
    prefix: str = "quantmill"
    endpoint_url: str | None = None


def s3_from_env() -> S3Location | None:
    """Return the S3Location configured by QUANTMILL_S3_BUCKET (and QUANTMILL_S3_PREFIX,
    QUANTMILL_S3_ENDPOINT_URL), or None when artifacts stay local."""
    bucket = os.environ.get("QUANTMILL_S3_BUCKET")
    if not bucket:
        return None
    return S3Location(bucket, os.environ.get("QUANTMILL_S3_PREFIX", "quantmill"), os.environ.get("QUANTMILL_S3_ENDPOINT_URL"))


def s3_client(location: S3Location, max_attempts: int = 10):
    """Return a boto3 S3 client for location with standard-mode retries."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": max_attempts}, connect_timeout=5, read_timeout=60)
    return boto3.client("s3", endpoint_url=location.endpoint_url, config=config)


def upload_artifact(directory: Path, location: S3Location, name: str, client=None) -> str:
    """Upload every file under directory to s3://bucket/prefix/name/, checked against its
    SHA-256, then the manifest; return the artifact's s3:// URI.

    Raises RuntimeError when S3 reports a different checksum than the local file's, and
    botocore's errors once its retries are spent.
    """
    client = client or s3_client(location)
    root = f"{location.prefix.strip('/')}/{name}".strip("/")
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        digest = sha256_file(path)
        _put(client, location.bucket, f"{root}/{relative}", path.read_bytes(), digest)
        files[relative] = digest
    manifest = json.dumps({"files": files}, indent=2, sort_keys=True).encode()
    _put(client, location.bucket, f"{root}/{MANIFEST}", manifest, _sha256_hex(manifest))
    return f"s3://{location.bucket}/{root}"


def _put(client, bucket: str, key: str, body: bytes, digest: str) -> None:
    checksum = base64.b64encode(bytes.fromhex(digest)).decode()
    client.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)
    stored = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED").get("ChecksumSHA256")
    if stored != checksum:
        raise RuntimeError(f"s3://{bucket}/{key}: stored SHA-256 {stored} differs from the local file's {checksum}")


def _sha256_hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
