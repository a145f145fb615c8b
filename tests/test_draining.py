"""A version still finishing its inferences while it unloads is told apart from a server left unready.

Triton unloads a version only once its in-flight inferences end, and answers 400 on
/v2/health/ready meanwhile. The slow-model fault's smoke inference runs on in Triton after the
deployer gave up on it; on a busy machine that took longer than the gate's 10 s readiness window
(a false alarm on a deployer that rolled back correctly). The gate now waits for such versions to
drain first. A version that failed to load is not draining: the window still catches the server
it leaves unready.
"""

from __future__ import annotations

import base64

import pytest
import requests

from suite import model_config, reference_model
from suite.checks import check_server_ready
from suite.errors import TritonError
from suite.triton_client import TritonControl
from suite.waiting import WaitTimeout

CANDIDATE = "drain_candidate"


@pytest.fixture
def triton(gate_stack, tmp_path):
    from suite.triton_server import TritonServer

    server = TritonServer("drain", gate_stack.runtime, tmp_path / "repository", tmp_path / "triton.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _load(url: str, model: bytes) -> requests.Response:
    """Load `model` as version 3 of an API-loaded candidate, as the zoo's deployers do (no folder:
    the repository index does not list it)."""
    config = model_config.pinned(_config(), 3)
    config.name = CANDIDATE
    return requests.post(
        f"{url}/v2/repository/models/{CANDIDATE}/load",
        json={
            "parameters": {
                "config": model_config.to_json(config),
                "file:3/model.onnx": base64.b64encode(model).decode(),
            }
        },
        timeout=120,
    )


CONFIG = (
    'platform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
    'input [ { name: "input" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]\n'
    'output [ { name: "label" data_type: TYPE_INT64 dims: [ -1 ] } ]\n'
)


def _config():
    return model_config.parse(CONFIG)


def _infer_giving_up_after(url: str, seconds: float) -> None:
    rows = reference_model._iris()[0][reference_model.GOLDEN_ROWS].tolist()
    body = {
        "inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": sum(rows, [])}],
        "outputs": [{"name": "label"}],
    }
    with pytest.raises(requests.Timeout):
        requests.post(f"{url}/v2/models/{CANDIDATE}/versions/3/infer", json=body, timeout=seconds)


def test_a_version_unloading_while_its_slow_inference_runs_on_is_waited_for(triton):
    url = triton.endpoints.http
    control = TritonControl(url, triton.endpoints.metrics)
    loaded = _load(url, reference_model.slow_onnx_for(4.0))
    assert loaded.status_code == 200, loaded.text

    _infer_giving_up_after(url, 1.0)  # a deployer's smoke timeout; Triton computes on
    requests.post(f"{url}/v2/repository/models/{CANDIDATE}/unload", timeout=30).raise_for_status()

    assert not control.ready(), "Triton should answer not-ready while the version drains"
    assert control.draining() == [f"{CANDIDATE} v3"]
    assert control.wait_drained(30.0) == []
    control.wait_server_ready(2.0)  # ready at once once drained: the window is not spent waiting


def test_a_version_that_failed_to_load_is_not_draining(triton):
    url = triton.endpoints.http
    control = TritonControl(url, triton.endpoints.metrics)
    loaded = _load(url, b"not an ONNX model")
    assert loaded.status_code == 400, loaded.text

    assert not control.ready(), "a failed load keeps Triton not ready (Triton #7014)"
    assert control.draining() == [], "nothing to wait for: the readiness window must judge it"
    assert control.wait_drained(5.0) == []
    assert control.failed_versions() == [], "an API-loaded model has no folder: the index cannot name it"


def test_a_version_that_failed_to_load_from_its_folder_is_judged_at_once_and_stays_unready(triton, tmp_path):
    # The readiness window need not run out here: the index names the failed version, and Triton
    # stays unready until the model loads successfully or Triton restarts.
    control = TritonControl(triton.endpoints.http, triton.endpoints.metrics)
    folder = tmp_path / "repository" / CANDIDATE
    (folder / "3").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(CONFIG)
    (folder / "3" / "model.onnx").write_bytes(b"not an ONNX model")
    with pytest.raises(TritonError):
        control.load(CANDIDATE)

    failed = control.wait_ready_or_failed(10.0)
    assert len(failed) == 1 and failed[0].startswith(f"{CANDIDATE} v3: "), failed
    assert "ONNX" in failed[0] or "onnx" in failed[0], f"the reason is Triton's: {failed}"
    problems = check_server_ready(control, 10.0)
    assert len(problems) == 1 and "until these load or Triton restarts" in problems[0], problems
    with pytest.raises(WaitTimeout):  # nobody loads: it stays so
        control.wait_server_ready(3.0)
    control.unload(CANDIDATE)  # nor does unloading the model clear it (measured on 2.51)
    assert control.wait_ready_or_failed(10.0) == failed

    (folder / "3" / "model.onnx").write_bytes(reference_model.build_onnx())
    control.load(CANDIDATE)
    assert control.wait_ready_or_failed(10.0) == []
    assert control.failed_versions() == []


def test_without_metrics_nothing_is_draining():
    assert TritonControl("http://127.0.0.1:9").draining() == []


def test_a_dead_server_is_reported_as_dead_not_as_a_failed_model(monkeypatch, tmp_path):
    # Seen once under four gate workers: Triton 2.51 segfaulted in a rollback's load; the
    # invariant said "a model in a failed state keeps the server unready", which misled.
    import suite.invariants as invariants
    from suite.model_repo import ModelFolder

    class DeadView:
        triton = TritonControl("http://127.0.0.1:9")  # nothing listens: the server is gone
        folder = ModelFolder(tmp_path, "m")

    monkeypatch.setattr(invariants, "SERVER_READY_S", 0.3)
    monkeypatch.setattr(invariants, "check_serves_committed", lambda *args, **kwargs: [])
    problems = invariants.InvariantChecker("m", golden=None)._serves(DeadView(), 3)
    assert len(problems) == 1 and "the server died or hangs" in problems[0], problems
