"""A test deployer that deploys nothing and reports what it sees of the platform.

Run by the gate as a platform's deploy command (tests/test_faults_reach_deployers.py): it looks
at its environment, asks the registry for the version, downloads the model, writes the version
folder, loads it as a candidate, and watches Triton for a moment; every answer and error goes to
the JSON file named by PROBE_REPORT (which the gate passes only through the manifest's pass_env).
It always exits 1, so the gate rolls nothing forward.
"""

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import requests

REPORT = Path(os.environ["PROBE_REPORT"])
MODEL = os.environ["GATE_MODEL"]
MLFLOW = os.environ["MLFLOW_TRACKING_URI"].rstrip("/")
TRITON = os.environ["GATE_TRITON_URL"].rstrip("/")
CONFIG = {
    "platform": "onnxruntime_onnx",
    "max_batch_size": 0,
    "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}],
    "output": [
        {"name": "label", "data_type": "TYPE_INT64", "dims": [-1]},
        {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [-1, 3]},
    ],
}
seen = {"environment": dict(os.environ)}


def record(key, action):
    try:
        seen[key] = action()
    except OSError as exc:
        seen[key] = {"error": type(exc).__name__, "errno": exc.errno, "message": str(exc)[:300]}
    except Exception as exc:  # noqa: BLE001 - what failed is what the test reads
        seen[key] = {"error": type(exc).__name__, "message": str(exc)[:300]}


def registry():
    if os.environ.get("GATE_VERSION"):
        url = f"{MLFLOW}/api/2.0/mlflow/model-versions/get?name={MODEL}&version={os.environ['GATE_VERSION']}"
    else:
        url = f"{MLFLOW}/api/2.0/mlflow/registered-models/alias?name={MODEL}&alias={os.environ['GATE_ALIAS']}"
    response = requests.get(url, timeout=10)
    return {"status": response.status_code, "version": response.json().get("model_version", {}).get("version")}


def download():
    version = os.environ.get("GATE_VERSION") or seen.get("registry", {}).get("version")
    response = requests.get(
        f"{MLFLOW}/model-versions/get-artifact",
        stream=True,
        timeout=30,
        params={"path": "model.onnx", "name": MODEL, "version": version},
    )
    received = bytearray()
    try:
        for chunk in response.iter_content(4096):
            received += chunk
        complete = True
    except requests.RequestException as exc:
        complete = f"{type(exc).__name__}: {str(exc)[:200]}"
    seen["model"] = bytes(received)
    return {
        "status": response.status_code,
        "declared": int(response.headers.get("Content-Length", -1)),
        "received": len(received),
        "sha256": hashlib.sha256(received).hexdigest(),
        "complete": complete,
    }


def write_version():
    version = os.environ.get("GATE_VERSION") or "0"
    folder = Path(os.environ["GATE_MODEL_REPOSITORY"]) / MODEL / version
    folder.mkdir()
    (folder / "model.onnx").write_bytes(seen.get("model") or b"\0" * 4096)
    return {"written": str(folder)}


def load_candidate():
    # From a folder of its own, not with the files in the request: a failed load then shows in the
    # repository index, so the gate judges the server it leaves unready at once rather than after
    # its 10 s readiness window, for nothing this test reads.
    version = int(os.environ.get("GATE_VERSION") or 0)
    folder = Path(os.environ["GATE_MODEL_REPOSITORY"]) / "probe-candidate" / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(seen.get("model") or b"")
    config = {**CONFIG, "name": "probe-candidate", "version_policy": {"specific": {"versions": [version]}}}
    body = {"parameters": {"config": json.dumps(config)}}
    response = requests.post(f"{TRITON}/v2/repository/models/probe-candidate/load", json=body, timeout=60)
    return {"status": response.status_code}


def watch_triton(seconds=3.0):
    deadline, answers = time.time() + seconds, []
    while time.time() < deadline:
        try:
            answers.append(requests.get(f"{TRITON}/v2/health/live", timeout=1).status_code)
        except requests.RequestException as exc:
            answers.append(type(exc).__name__)
        time.sleep(0.1)
    return {"answers": sorted(set(map(str, answers)))}


record("registry", registry)
record("download", download)
record("write", write_version)
record("load", load_candidate)
record("triton", watch_triton)
seen.pop("model", None)
REPORT.write_text(json.dumps(seen, indent=1, default=str))
print(f"probe: saw {json.dumps({k: v for k, v in seen.items() if k != 'environment'})[:2000]}")
sys.exit(1)
