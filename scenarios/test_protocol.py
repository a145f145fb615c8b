"""Open Inference Protocol v2 basics on every server, over HTTP and gRPC."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from suite import model_config
from suite.model_repo import ModelFolder
from suite.timings import SERVER_READY_S
from suite.waiting import WaitTimeout

pytestmark = pytest.mark.smoke


@pytest.fixture
def env(request, committed):
    request.node.committed_version = committed(request.param)
    return request.param


@pytest.fixture
def grpc(env, gate_envs):
    client = grpcclient.InferenceServerClient(gate_envs[env].server.endpoints.grpc)
    yield client
    client.close()


def test_health_over_grpc(env, grpc, gate_envs):
    assert grpc.is_server_live(), f"{env}: gRPC ServerLive is false"
    try:  # settles ~1.5 s after a deploy (Triton #7014)
        gate_envs[env].triton.wait_server_ready(SERVER_READY_S)
    except WaitTimeout:
        pass  # gRPC's own answer, next, is the verdict
    assert grpc.is_server_ready(), f"{env}: gRPC ServerReady is false"


def test_metadata_matches_config(env, gate_envs, gate_platform, grpc):
    model = gate_platform.model.name
    config = model_config.read(ModelFolder(gate_envs[env].repository, model).config_path)
    expected_inputs = {(t.name, model_config.mc.DataType.Name(t.data_type)[5:], tuple(t.dims)) for t in config.input}
    expected_outputs = {(t.name, model_config.mc.DataType.Name(t.data_type)[5:], tuple(t.dims)) for t in config.output}
    http_meta = gate_envs[env].triton.metadata(model)
    grpc_meta = grpc.get_model_metadata(model, as_json=True)
    for protocol, meta in (("HTTP", http_meta), ("gRPC", grpc_meta)):
        inputs = {(t["name"], t["datatype"], tuple(int(d) for d in t["shape"])) for t in meta["inputs"]}
        outputs = {(t["name"], t["datatype"], tuple(int(d) for d in t["shape"])) for t in meta["outputs"]}
        assert inputs == expected_inputs, f"{env} {protocol} metadata inputs {inputs} != config {expected_inputs}"
        assert outputs == expected_outputs, f"{env} {protocol} metadata outputs {outputs} != config {expected_outputs}"


def test_same_golden_answer_over_http_and_grpc(env, gate_envs, gate_platform, gate_golden, grpc):
    model = gate_platform.model.name
    names = list(gate_golden.expected)
    http_out = gate_envs[env].triton.infer(model, gate_golden.inputs, names)
    inputs = []
    for name, array in gate_golden.inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = grpc.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput(n) for n in names])
    grpc_out = {n: result.as_numpy(n) for n in names}
    assert not gate_golden.compare(http_out), gate_golden.compare(http_out)
    assert not gate_golden.compare(grpc_out), gate_golden.compare(grpc_out)
    for name in names:
        assert np.array_equal(http_out[name], grpc_out[name]), f"{env}: {name} differs between HTTP and gRPC"


def _malformed_input(kind: str) -> dict:
    body = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
    if kind == "wrong input name":
        body["name"] = "not_an_input"
    elif kind == "wrong shape":
        body["shape"], body["data"] = [1, 3], [5.1, 3.5, 1.4]
    else:
        body["datatype"], body["data"] = "INT32", [5, 3, 1, 0]
    return body


def _send_http(environment, model: str, body: dict) -> str:
    response = requests.post(
        f"{environment.triton.http_url}/v2/models/{model}/infer", json={"inputs": [body]}, timeout=10
    )
    assert response.status_code == 400, f"answered {response.status_code}: {response.text}"
    return response.json().get("error", "")


def _send_grpc(grpc, model: str, body: dict) -> str:
    tensor = grpcclient.InferInput(body["name"], body["shape"], body["datatype"])
    dtype = np.float32 if body["datatype"] == "FP32" else np.int32
    tensor.set_data_from_numpy(np.asarray(body["data"], dtype=dtype).reshape(body["shape"]))
    with pytest.raises(InferenceServerException) as raised:
        grpc.infer(model, [tensor])
    assert "INVALID_ARGUMENT" in str(raised.value.status()), f"gRPC status {raised.value.status()}"
    return raised.value.message()


@pytest.mark.parametrize("protocol", ["HTTP", "gRPC"])
@pytest.mark.parametrize("malformed", ["wrong input name", "wrong shape", "wrong datatype"])
def test_malformed_request_is_rejected_and_not_counted(
    env, gate_envs, gate_platform, grpc, request, protocol, malformed
):
    model = gate_platform.model.name
    environment = gate_envs[env]
    metrics = environment.triton.metrics()
    before = {n: metrics.value(n, model=model) for n in ("nv_inference_request_success", "nv_inference_count")}
    body = _malformed_input(malformed)
    error = _send_http(environment, model, body) if protocol == "HTTP" else _send_grpc(grpc, model, body)
    assert error.strip(), f"{env}: {protocol} rejected a request with {malformed} without an error message"
    metrics = environment.triton.metrics()
    after = {n: metrics.value(n, model=model) for n in before}
    assert after == before, (
        f"{env}: a rejected {protocol} request ({malformed}: {error}) was counted as served: {before} -> {after}"
    )
    assert environment.triton.model_ready(model, request.node.committed_version), (
        f"{env}: the model is no longer ready after a malformed request"
    )
