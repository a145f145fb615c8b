"""MLflow -> Triton deployer written with the vendors' SDKs (MlflowClient, tritonclient).

Part of the gate's zoo of foreign deployers (tests/deployers/). It proves the new version on a
candidate model loaded from the request's files, pins config.pbtxt, keeps failed versions as
`N.failed_<UTC>`, locks the environment. Its gap: it asks the registry what the alias points at
twice, once to download and again when it records the deploy, so an alias moved in between
makes current.json name a version Triton does not serve.

Usage: python late_alias.py   (reads the GATE_* variables and MLFLOW_TRACKING_URI)
"""

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import filelock
import mlflow.artifacts
import numpy as np
import tritonclient.http as httpclient
from google.protobuf import json_format, text_format
from mlflow import MlflowClient
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

REPO = Path(os.environ["GATE_MODEL_REPOSITORY"])
MODEL = os.environ["GATE_MODEL"]
FOLDER = REPO / MODEL
CANDIDATE = f"{MODEL}-next"
client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
TRITON_HOST = os.environ["GATE_TRITON_URL"].split("://", 1)[-1]
triton = httpclient.InferenceServerClient(TRITON_HOST, network_timeout=120)
smoke_client = httpclient.InferenceServerClient(TRITON_HOST, network_timeout=2)  # a smoke answer within 2 s
GOLDEN = json.loads(Path(os.environ["GATE_GOLDEN"]).read_text())


def which_version():
    """The registry version to deploy, as the request names it."""
    if os.environ.get("GATE_VERSION"):
        return client.get_model_version(MODEL, os.environ["GATE_VERSION"])
    return client.get_model_version_by_alias(MODEL, os.environ["GATE_ALIAS"])


def config_for(name, version, onnx_file):
    path = FOLDER / "config.pbtxt"
    config = model_config_pb2.ModelConfig()
    if path.exists():
        text_format.Parse(path.read_text(), config)
    else:  # first deploy here: the iris classifier's signature
        text_format.Parse(
            'platform: "onnxruntime_onnx" max_batch_size: 0 '
            'input { name: "input" data_type: TYPE_FP32 dims: [-1, 4] } '
            'output { name: "label" data_type: TYPE_INT64 dims: [-1] } '
            'output { name: "probabilities" data_type: TYPE_FP32 dims: [-1, 3] }',
            config,
        )
    config.name = name
    config.version_policy.Clear()
    config.version_policy.specific.versions.append(version)
    return config


def golden_ok(name, version):
    rows = np.array(GOLDEN["inputs"]["input"]["data"], dtype=np.float32)
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = smoke_client.infer(name, [tensor], model_version=str(version))
    return result.as_numpy("label").tolist() == GOLDEN["expected"]["label"]["data"]


def wait_ready(name, version, seconds=30.0):
    deadline = time.time() + seconds
    while not triton.is_model_ready(name, str(version)):
        if time.time() > deadline:
            raise RuntimeError(f"{name} v{version} is not ready after {seconds:.0f} s")
        time.sleep(0.1)


def clear_failed_candidate(committed, failed):
    """Triton keeps a failed version, and stays not-ready, until that name and version load once:
    load the committed model's files as the failed version, then unload."""
    if committed is None:
        return
    files = {f"file:{failed}/{p.name}": p.read_bytes() for p in (FOLDER / str(committed)).iterdir()}
    config = config_for(CANDIDATE, failed, None)
    try:
        triton.load_model(CANDIDATE, config=json_format.MessageToJson(config), files=files)
        triton.unload_model(CANDIDATE)
    except InferenceServerException as exc:
        print(f"could not clear the failed candidate: {exc}")


def write_atomically(path, text):
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def write_json(path, body):
    write_atomically(path, json.dumps(body, indent=1, sort_keys=True))


def deploy():
    FOLDER.mkdir(parents=True, exist_ok=True)
    for stale in [*FOLDER.glob(".download-*"), *FOLDER.glob(".stage-*")]:  # of a deploy that died
        shutil.rmtree(stale)
    current_path = FOLDER / "current.json"
    committed = json.loads(current_path.read_text())["active_version"] if current_path.exists() else None
    mv = which_version()
    version = int(mv.version)
    print(f"deploying {MODEL} v{version}")
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=FOLDER))
    try:
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{version}", dst_path=str(scratch)))
        onnx_bytes = (local / "model.onnx").read_bytes()
    finally:
        shutil.rmtree(scratch)
    target = FOLDER / str(version)
    if target.exists():
        if (target / "model.onnx").read_bytes() != onnx_bytes:
            print(f"{target} already holds another model: refusing to overwrite it")
            return 2
    else:
        staging = Path(tempfile.mkdtemp(prefix=".stage-", dir=FOLDER))
        (staging / "model.onnx").write_bytes(onnx_bytes)
        os.rename(staging, target)
    candidate = config_for(CANDIDATE, version, target / "model.onnx")
    try:
        triton.load_model(
            CANDIDATE, config=json_format.MessageToJson(candidate), files={f"file:{version}/model.onnx": onnx_bytes}
        )
        wait_ready(CANDIDATE, version)
        if not golden_ok(CANDIDATE, version):
            raise RuntimeError("the candidate's labels differ from the golden set")
        live = config_for(MODEL, version, None)
        triton.load_model(MODEL, config=json_format.MessageToJson(live))
        wait_ready(MODEL, version)
        triton.unload_model(CANDIDATE)
    except Exception as exc:  # noqa: BLE001 - any failure rolls back
        print(f"deploy of v{version} failed: {exc}")
        failed_load = isinstance(exc, InferenceServerException) and "load" in str(exc)
        try:
            triton.unload_model(CANDIDATE)
            if failed_load:
                clear_failed_candidate(committed, version)
            triton.load_model(MODEL)  # the committed config on disk
        except Exception as again:  # noqa: BLE001 - Triton may be gone; the disk is put right anyway
            print(f"reloading the committed version failed too: {again}")
        failed = FOLDER / f"{version}.failed_{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        os.rename(target, failed)
        print(f"kept v{version} as {failed.name}")
        return 1
    write_atomically(FOLDER / "config.pbtxt", text_format.MessageToString(live))
    recorded = which_version()  # what the alias points at now, for the record
    write_json(
        current_path,
        {
            "active_version": int(recorded.version),
            "run_id": recorded.run_id,
            "alias": os.environ.get("GATE_ALIAS", ""),
            "updated_at_utc": time.strftime("%Y%m%dT%H%M%S", time.gmtime()),
            "deployer": "late_alias.py",
        },
    )
    print(f"deployed v{version}")
    return 0


if __name__ == "__main__":
    with filelock.FileLock(str(REPO / ".late-alias.lock")):
        sys.exit(deploy())
