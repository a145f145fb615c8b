"""MLflow -> Triton deployer of a platform that keeps failed versions out of Triton's sight.

Part of the gate's zoo of foreign deployers (tests/deployers/). Careful in most things: a lock,
a staged download, a canary model folder proved with known answers before the switch, failed
versions moved to `_quarantine/failed_v<N>_<UTC>`, current.json written atomically. Its gap:
config.pbtxt has no version_policy, so Triton serves the highest version folder, which is not
the committed one after a rollback to an older version.

Usage: python quarantine_outside.py   (reads the GATE_* variables and MLFLOW_TRACKING_URI)
"""

import datetime
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

ENV, MODEL = os.environ["GATE_ENV"], os.environ["GATE_MODEL"]
REPO = Path(os.environ["GATE_MODEL_REPOSITORY"])
TRITON = os.environ["GATE_TRITON_URL"].rstrip("/")
MLFLOW = os.environ["MLFLOW_TRACKING_URI"].rstrip("/")
MODEL_DIR = REPO / MODEL
CANARY = f"{MODEL}-canary"
# Known iris samples and their classes: the canary must label them right.
SAMPLES = [[5.1, 3.5, 1.4, 0.2], [5.0, 3.4, 1.5, 0.2], [5.7, 2.8, 4.5, 1.3], [6.3, 3.3, 6.0, 2.5]]
LABELS = [0, 0, 1, 2]
CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ {{ name: "input" data_type: TYPE_FP32 dims: [ -1, 4 ] }} ]
output [
  {{ name: "label" data_type: TYPE_INT64 dims: [ -1 ] }},
  {{ name: "probabilities" data_type: TYPE_FP32 dims: [ -1, 3 ] }}
]
"""


def log(message):
    print(f"[{ENV}] {message}", flush=True)


def utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def registry(path, **params):
    response = requests.get(f"{MLFLOW}/api/2.0/mlflow/{path}", params=params, timeout=10)
    response.raise_for_status()
    return response.json()["model_version"]


def resolve():
    if os.environ.get("GATE_VERSION"):
        return registry("model-versions/get", name=MODEL, version=os.environ["GATE_VERSION"])
    return registry("registered-models/alias", name=MODEL, alias=os.environ["GATE_ALIAS"])


def download(version, into):
    response = requests.get(
        f"{MLFLOW}/model-versions/get-artifact",
        params={"path": "model.onnx", "name": MODEL, "version": version},
        timeout=60,
    )
    response.raise_for_status()
    (into / "model.onnx").write_bytes(response.content)


def triton(verb, path, **kwargs):
    return requests.request(verb, f"{TRITON}{path}", timeout=kwargs.pop("timeout", 120), **kwargs)


def wait_ready(name, version=None, seconds=30):
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/ready"
    deadline = time.time() + seconds
    while time.time() < deadline:
        if triton("GET", path, timeout=5).status_code == 200:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} v{version} not ready after {seconds} s")


def smoke(name, version):
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": [len(SAMPLES), 4],
                "datatype": "FP32",
                "data": [x for row in SAMPLES for x in row],
            }
        ],
        "outputs": [{"name": "label"}],
    }
    response = triton("POST", f"/v2/models/{name}/versions/{version}/infer", json=body, timeout=5)
    response.raise_for_status()
    labels = response.json()["outputs"][0]["data"]
    if labels != LABELS:
        raise RuntimeError(f"canary answered {labels}, expected {LABELS}")


def write_atomically(path, text):
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def quarantine(folder, version):
    target = MODEL_DIR / "_quarantine" / f"failed_v{version}_{utc()}"
    target.parent.mkdir(exist_ok=True)
    shutil.move(str(folder), str(target))
    log(f"kept v{version} as {target.relative_to(MODEL_DIR)}")


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def deploy():
    mv = resolve()
    version = int(mv["version"])
    log(f"deploying {MODEL} v{version}")
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    for stale in MODEL_DIR.glob(".incoming-*"):
        shutil.rmtree(stale)
    canary_dir = REPO / CANARY
    shutil.rmtree(canary_dir, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".incoming-{version}-", dir=MODEL_DIR))
    try:
        download(version, staging)
    except Exception:
        shutil.rmtree(staging)
        raise
    target = MODEL_DIR / str(version)
    if target.exists() and sha(target / "model.onnx") != sha(staging / "model.onnx"):
        shutil.rmtree(staging)
        raise SystemExit(f"refusing: {target} exists with other content than registry v{version}")
    if not (MODEL_DIR / "config.pbtxt").exists():
        write_atomically(MODEL_DIR / "config.pbtxt", CONFIG.format(name=MODEL))

    (canary_dir / str(version)).mkdir(parents=True)
    shutil.copy(staging / "model.onnx", canary_dir / str(version) / "model.onnx")
    (canary_dir / "config.pbtxt").write_text(CONFIG.format(name=CANARY))
    try:
        response = triton("POST", f"/v2/repository/models/{CANARY}/load")
        if response.status_code != 200:
            raise RuntimeError(f"canary load refused: {response.text[:300]}")
        wait_ready(CANARY, version)
        smoke(CANARY, version)
    except Exception as exc:
        log(f"canary failed: {exc}")
        triton("POST", f"/v2/repository/models/{CANARY}/unload")
        shutil.rmtree(canary_dir, ignore_errors=True)
        quarantine(staging, version)
        return 1

    if target.exists():
        shutil.rmtree(staging)
    else:
        os.rename(staging, target)
    response = triton("POST", f"/v2/repository/models/{MODEL}/load")
    if response.status_code != 200:
        raise RuntimeError(f"live load refused: {response.text[:300]}")
    wait_ready(MODEL)
    current = {
        "active_version": version,
        "run_id": mv.get("run_id", ""),
        "alias": os.environ.get("GATE_ALIAS", ""),
        "updated_at_utc": utc(),
        "deployed_by": "quarantine_outside.py",
    }
    write_atomically(MODEL_DIR / "current.json", json.dumps(current, indent=2) + "\n")
    triton("POST", f"/v2/repository/models/{CANARY}/unload")
    shutil.rmtree(canary_dir, ignore_errors=True)
    log(f"deployed v{version}")
    return 0


def main():
    REPO.mkdir(parents=True, exist_ok=True)
    with open(REPO / ".deploy-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return deploy()
        except requests.RequestException as exc:
            log(f"deploy failed: {type(exc).__name__}: {exc}")
            return 1


if __name__ == "__main__":
    sys.exit(main())
