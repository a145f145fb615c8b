"""MLflow -> Triton deployer in plain standard-library Python (urllib, no SDKs).

Part of the gate's zoo of foreign deployers (tests/deployers/). It stages and checks the
download, proves the version on a candidate model with known answers, pins config.pbtxt,
quarantines failures as `N.failed_<UTC>` and writes current.json atomically. Its gap: no
per-environment lock. It snapshots current.json and config.pbtxt when it starts and puts that
snapshot back when it fails, so a deploy that committed meanwhile is undone, and two deploys
share one candidate name.

Usage: python no_lock.py   (reads the GATE_* variables and MLFLOW_TRACKING_URI)
"""

import base64
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path

MODEL = os.environ["GATE_MODEL"]
FOLDER = Path(os.environ["GATE_MODEL_REPOSITORY"]) / MODEL
TRITON = os.environ["GATE_TRITON_URL"].rstrip("/")
MLFLOW = os.environ["MLFLOW_TRACKING_URI"].rstrip("/")
CANDIDATE = MODEL + "_candidate"
GOLDEN = json.loads(Path(os.environ["GATE_GOLDEN"]).read_text())
STAMP = time.strftime("%Y%m%dT%H%M%S", time.gmtime())


class Failed(Exception):
    pass


def http(method, url, body=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, HTTPException) as exc:  # refused, reset, timed out: no answer
        return 0, f"{type(exc).__name__}: {exc}".encode()


def registry_version():
    query = {"name": MODEL}
    if os.environ.get("GATE_VERSION"):
        path, query["version"] = "model-versions/get", os.environ["GATE_VERSION"]
    else:
        path, query["alias"] = "registered-models/alias", os.environ["GATE_ALIAS"]
    status, body = http("GET", f"{MLFLOW}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}", timeout=10)
    if status != 200:
        raise Failed(f"registry: {status} {body[:200]!r}")
    return json.loads(body)["model_version"]


def model_bytes(version):
    query = urllib.parse.urlencode({"path": "model.onnx", "name": MODEL, "version": version})
    status, body = http("GET", f"{MLFLOW}/model-versions/get-artifact?{query}")
    if status != 200:
        raise Failed(f"download: {status}")
    return body


def config_text(name, version):
    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        'input [ { name: "input" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]\n'
        'output [ { name: "label" data_type: TYPE_INT64 dims: [ -1 ] },\n'
        '         { name: "probabilities" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]\n'
        f"version_policy: {{ specific: {{ versions: [ {version} ] }} }}\n"
    )


def config_json(version, name):
    """Triton's load API wants JSON: the few fields this model needs, written out."""
    return json.dumps(
        {
            "name": name,
            "platform": "onnxruntime_onnx",
            "max_batch_size": 0,
            "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}],
            "output": [
                {"name": "label", "data_type": "TYPE_INT64", "dims": [-1]},
                {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [-1, 3]},
            ],
            "version_policy": {"specific": {"versions": [version]}},
        }
    )


def load(name, version=None, files=None):
    parameters = {}
    if version is not None:
        parameters["config"] = config_json(version, name)
    for path, data in (files or {}).items():
        parameters[path] = base64.b64encode(data).decode()
    status, body = http(
        "POST",
        f"{TRITON}/v2/repository/models/{name}/load",
        {"parameters": parameters} if parameters else {},
        timeout=180,
    )
    if status != 200:
        raise Failed(f"load of {name}: {body[:300]!r}")


def unload(name):
    http("POST", f"{TRITON}/v2/repository/models/{name}/unload")


def ready(name, version, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if http("GET", f"{TRITON}/v2/models/{name}/versions/{version}/ready", timeout=5)[0] == 200:
            return
        time.sleep(0.1)
    raise Failed(f"{name} v{version} not ready after {seconds} s")


def answers_golden(name, version):
    rows = GOLDEN["inputs"]["input"]["data"]
    body = {
        "inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": sum(rows, [])}],
        "outputs": [{"name": "label"}],
    }
    status, answer = http("POST", f"{TRITON}/v2/models/{name}/versions/{version}/infer", body, timeout=2)
    if status != 200:
        raise Failed(f"smoke: {status} {answer[:200]!r}")
    labels = json.loads(answer)["outputs"][0]["data"]
    if labels != GOLDEN["expected"]["label"]["data"]:
        raise Failed(f"smoke: labels {labels} differ from the golden set")


def replace_file(path, data):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".swap-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise


def main():
    FOLDER.mkdir(parents=True, exist_ok=True)
    snapshot = {
        name: (FOLDER / name).read_bytes() for name in ("current.json", "config.pbtxt") if (FOLDER / name).exists()
    }
    committed = json.loads(snapshot["current.json"])["active_version"] if "current.json" in snapshot else None
    try:
        mv = registry_version()
        version = int(mv["version"])
        data = model_bytes(version)
    except (Failed, OSError) as exc:
        print(f"nothing deployed: {exc}")
        return 1
    target = FOLDER / str(version)
    if target.exists() and (target / "model.onnx").read_bytes() != data:
        print(f"refusing: {target} holds another model than registry v{version}")
        return 1
    materialized = not target.exists()
    try:
        if materialized:
            staging = Path(tempfile.mkdtemp(prefix=".new-", dir=FOLDER))
            try:
                (staging / "model.onnx").write_bytes(data)
                os.rename(staging, target)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        try:
            load(CANDIDATE, version, {f"file:{version}/model.onnx": data})
        except Failed:
            if committed is not None:  # a failed version keeps Triton not-ready until it loads once
                old = (FOLDER / str(committed) / "model.onnx").read_bytes()
                load(CANDIDATE, version, {f"file:{version}/model.onnx": old})
                unload(CANDIDATE)
            raise
        ready(CANDIDATE, version)
        answers_golden(CANDIDATE, version)
        replace_file(FOLDER / "config.pbtxt", config_text(MODEL, version).encode())
        load(MODEL)
        ready(MODEL, version)
        unload(CANDIDATE)
        body = {
            "active_version": version,
            "run_id": mv.get("run_id", ""),
            "alias": os.environ.get("GATE_ALIAS", ""),
            "updated_at_utc": STAMP,
            "previous": committed,
        }
        replace_file(FOLDER / "current.json", (json.dumps(body) + "\n").encode())
    except (Failed, OSError) as exc:
        print(f"deploy of v{version} failed: {exc}; putting back the snapshot taken at start")
        for name, content in snapshot.items():
            if (FOLDER / name).read_bytes() != content:
                replace_file(FOLDER / name, content)
        unload(CANDIDATE)
        try:
            load(MODEL)
        except (Failed, OSError) as again:
            print(f"reload failed: {again}")
        if materialized and target.exists():
            os.rename(target, FOLDER / f"{version}.failed_{STAMP}")
        return 1
    print(f"deployed v{version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
