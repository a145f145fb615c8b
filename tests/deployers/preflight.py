"""MLflow -> Triton deployer that proves a model before Triton ever sees it (a correct one).

Part of the gate's zoo of foreign deployers (tests/deployers/), in a style unlike the gate's own:
the downloaded model is checked offline with ONNX Runtime (signature against config.pbtxt,
known answers, latency) before it goes near the server; only then is it loaded, pinned, and
recorded. current.json is compact, sorted, without a trailing newline and with fields of its
own. `--recover` makes the repository agree with current.json again after a crash.

Usage: python preflight.py [--recover]   (reads the GATE_* variables and MLFLOW_TRACKING_URI)
"""

import datetime
import fcntl
import hashlib
import http.client
import json
import os
import shutil
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime
import requests
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

MODEL = os.environ["GATE_MODEL"]
REPO = Path(os.environ["GATE_MODEL_REPOSITORY"])
FOLDER = REPO / MODEL
TRITON = os.environ["GATE_TRITON_URL"].rstrip("/")
MLFLOW = os.environ["MLFLOW_TRACKING_URI"].rstrip("/")
GOLDEN = json.loads(Path(os.environ["GATE_GOLDEN"]).read_text())
LATENCY_BUDGET_S = 2.0
DTYPES = {"TYPE_FP32": "tensor(float)", "TYPE_FP64": "tensor(double)", "TYPE_INT64": "tensor(int64)"}
FIRST_CONFIG = """platform: "onnxruntime_onnx" max_batch_size: 0
input { name: "input" data_type: TYPE_FP32 dims: [-1, 4] }
output { name: "label" data_type: TYPE_INT64 dims: [-1] }
output { name: "probabilities" data_type: TYPE_FP32 dims: [-1, 3] }"""


class Rejected(Exception):
    """The model or the environment is not fit for the deploy; nothing live was changed."""


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def config():
    path = FOLDER / "config.pbtxt"
    parsed = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text() if path.exists() else FIRST_CONFIG, parsed)
    parsed.name = MODEL
    return parsed


def pinned(version):
    pin = config()
    pin.version_policy.Clear()
    pin.version_policy.specific.versions.append(version)
    return pin


def put(path, data):
    """Replace `path` atomically (temp file in the same folder, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def resolve():
    if os.environ.get("GATE_VERSION"):
        url = f"{MLFLOW}/api/2.0/mlflow/model-versions/get?name={MODEL}&version={os.environ['GATE_VERSION']}"
    else:
        url = f"{MLFLOW}/api/2.0/mlflow/registered-models/alias?name={MODEL}&alias={os.environ['GATE_ALIAS']}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["model_version"]


def fetch(version):
    query = urllib.parse.urlencode({"path": "model.onnx", "name": MODEL, "version": version})
    with urllib.request.urlopen(f"{MLFLOW}/model-versions/get-artifact?{query}", timeout=60) as response:
        return response.read()  # http.client raises IncompleteRead on a short body


def preflight(model_bytes):
    """Offline: the graph loads, matches config.pbtxt, answers the golden labels within budget."""
    try:
        session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise Rejected(f"ONNX Runtime cannot load the model: {str(exc)[:300]}") from None
    expected = config()
    for declared, actual in zip(expected.input, session.get_inputs()):
        dims = [d if isinstance(d, int) else -1 for d in actual.shape]
        kind = model_config_pb2.DataType.Name(declared.data_type)
        if (declared.name, list(declared.dims), DTYPES.get(kind)) != (actual.name, dims, actual.type):
            raise Rejected(
                f"input {actual.name} {dims} {actual.type} does not match config.pbtxt "
                f"({declared.name} {list(declared.dims)} {kind})"
            )
    rows = np.array(GOLDEN["inputs"]["input"]["data"], dtype=np.float32)
    began = time.perf_counter()
    labels = session.run(["label"], {session.get_inputs()[0].name: rows})[0].tolist()
    took = time.perf_counter() - began
    if labels != GOLDEN["expected"]["label"]["data"]:
        raise Rejected(f"golden labels differ: got {labels}")
    if took > LATENCY_BUDGET_S:
        raise Rejected(f"one batch took {took:.1f} s, over the {LATENCY_BUDGET_S} s budget")


def triton_load(body=None):
    response = requests.post(f"{TRITON}/v2/repository/models/{MODEL}/load", json=body or {}, timeout=180)
    if response.status_code != 200:
        raise RuntimeError(f"Triton refused the load: {response.text[:300]}")


def serving(version, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        ok = requests.get(f"{TRITON}/v2/models/{MODEL}/versions/{version}/ready", timeout=5).status_code == 200
        if ok:
            rows = GOLDEN["inputs"]["input"]["data"]
            answer = requests.post(
                f"{TRITON}/v2/models/{MODEL}/versions/{version}/infer",
                timeout=5,
                json={
                    "inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": sum(rows, [])}],
                    "outputs": [{"name": "label"}],
                },
            )
            answer.raise_for_status()
            if answer.json()["outputs"][0]["data"] == GOLDEN["expected"]["label"]["data"]:
                return
            raise RuntimeError(f"v{version} answers wrong labels through Triton")
        time.sleep(0.1)
    raise RuntimeError(f"v{version} not ready after {seconds} s")


def keep_failed(folder, version):
    target = FOLDER / f"{version}.failed_{now().strftime('%Y%m%dT%H%M%SZ')}"
    os.rename(folder, target)
    print(f"v{version} kept as {target.name}")


def committed_version():
    path = FOLDER / "current.json"
    return json.loads(path.read_text())["active_version"] if path.exists() else None


def clean_staging():
    """What a killed deploy may leave: its staging folder, and a `put` cut before its rename."""
    for stale in FOLDER.glob(".preflight-*"):
        shutil.rmtree(stale)
    for partial in [*FOLDER.glob(".config.pbtxt.*"), *FOLDER.glob(".current.json.*")]:
        partial.unlink(missing_ok=True)


def deploy():
    FOLDER.mkdir(parents=True, exist_ok=True)
    clean_staging()
    committed = committed_version()
    mv = resolve()
    version = int(mv["version"])
    model_bytes = fetch(version)
    digest = hashlib.sha256(model_bytes).hexdigest()
    target = FOLDER / str(version)
    if target.exists() and hashlib.sha256((target / "model.onnx").read_bytes()).hexdigest() != digest:
        raise Rejected(f"{target} exists with other content than registry v{version}; not touching it")
    if not target.exists():
        staging = FOLDER / f".preflight-{version}-{os.getpid()}"
        staging.mkdir()
        try:
            (staging / "model.onnx").write_bytes(model_bytes)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            preflight(model_bytes)
        except Rejected:
            keep_failed(staging, version)
            raise
        os.rename(staging, target)
    else:
        preflight(model_bytes)
    try:
        triton_load({"parameters": {"config": json_format.MessageToJson(pinned(version))}})
        serving(version)
    except Exception:
        try:
            triton_load()  # config.pbtxt on disk still pins the committed version
        except Exception as exc:  # noqa: BLE001 - reported, the disk is put right below anyway
            print(f"reloading v{committed} failed: {exc}")
        if version != committed:
            keep_failed(target, version)
        raise
    put(FOLDER / "config.pbtxt", text_format.MessageToString(pinned(version)).encode())
    record = {
        "active_version": version,
        "alias": os.environ.get("GATE_ALIAS", ""),
        "run_id": mv.get("run_id", ""),
        "updated_at_utc": now().strftime("%Y%m%dT%H%M%S"),
        "deployed_at": now().isoformat(),
        "model_sha256": digest,
        "previous_version": committed,
        "tool": "preflight.py",
    }
    put(FOLDER / "current.json", json.dumps(record, sort_keys=True, separators=(",", ":")).encode())
    print(f"deployed v{version} ({digest[:12]})")


def settled(seconds=60):
    """Wait until Triton has finished what it was asked (a load sent by a deploy that then died)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        index = requests.post(f"{TRITON}/v2/repository/index", json={}, timeout=10).json()
        if not any(m.get("name") == MODEL and m.get("state") in ("LOADING", "UNLOADING") for m in index):
            return
        time.sleep(0.2)


def recover():
    """After a crash: current.json is the truth; config.pbtxt, the versions and Triton follow it."""
    settled()
    clean_staging()
    committed = committed_version()
    if committed is None:
        return
    if config().version_policy.specific.versions != [committed]:
        put(FOLDER / "config.pbtxt", text_format.MessageToString(pinned(committed)).encode())
        print(f"config.pbtxt pinned back to v{committed}")
    # A version folder made after the last commit belongs to the deploy that died: keep it aside.
    committed_at = (FOLDER / "current.json").stat().st_mtime
    for folder in [p for p in FOLDER.iterdir() if p.name.isdigit() and int(p.name) != committed]:
        if folder.stat().st_mtime > committed_at:
            keep_failed(folder, int(folder.name))
    triton_load()
    serving(committed)
    print(f"v{committed} serves again")


def main():
    REPO.mkdir(parents=True, exist_ok=True)
    with open(REPO / ".preflight.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            recover() if "--recover" in sys.argv else deploy()
        except (Rejected, RuntimeError, OSError, http.client.HTTPException, requests.RequestException) as exc:
            print(f"deploy failed: {type(exc).__name__}: {exc}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
