"""Artifacts to an S3 API server (moto's server mode) started on loopback by the test."""

import hashlib
import json
import threading
import time

from quantmill.storage import MANIFEST, s3_client, upload_artifact


def _artifact(tmp_path):
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(bytes(range(256)) * 4096)
    (folder / "metadata.json").write_text('{"format": "gguf-q8_0"}')
    return folder


def test_upload_is_checked_and_the_manifest_comes_last(s3_server, tmp_path):
    _, location = s3_server
    uri = upload_artifact(_artifact(tmp_path), location, "tiny/1/gguf-q8_0")
    assert uri == "s3://artifacts/quantmill/tiny/1/gguf-q8_0"
    client = s3_client(location)
    listed = client.list_objects_v2(Bucket="artifacts", Prefix="quantmill/tiny/1/gguf-q8_0/")["Contents"]
    keys = [o["Key"] for o in listed]
    assert sorted(keys) == sorted(f"quantmill/tiny/1/gguf-q8_0/{n}" for n in ("model.gguf", "metadata.json", MANIFEST))
    manifest = json.loads(client.get_object(Bucket="artifacts", Key=f"quantmill/tiny/1/gguf-q8_0/{MANIFEST}")["Body"].read())
    body = client.get_object(Bucket="artifacts", Key="quantmill/tiny/1/gguf-q8_0/model.gguf")["Body"].read()
    assert manifest["files"]["model.gguf"] == hashlib.sha256(body).hexdigest()


def test_a_store_that_stops_for_a_few_seconds_is_survived(s3_server, tmp_path):
    server, location = s3_server
    folder = _artifact(tmp_path)
    server.stop()
    restart = threading.Timer(3.0, server.start)
    restart.start()
    started = time.monotonic()
    uri = upload_artifact(folder, location, "tiny/1/retried")
    restart.join()
    assert time.monotonic() - started >= 2.5, "the upload should have waited for the store"
    client = s3_client(location)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="artifacts", Prefix="quantmill/tiny/1/retried/")["Contents"]}
    assert f"quantmill/tiny/1/retried/{MANIFEST}" in keys and len(keys) == 3
    assert uri.endswith("tiny/1/retried")
