"""The platform's own Triton options (manifest `triton.args`) reach the real servers the gate starts.

`--disable-auto-complete-config` is the reference platform's: with it a model folder without a
config.pbtxt cannot be loaded (Triton may not make one up), without it Triton completes one from
the model file. So the same folder tells whether the option reached the server.
"""

from __future__ import annotations

import requests

from suite import reference_model


def _load_without_config(runtime, tmp_path, extra_args):
    from suite.triton_server import TritonServer

    repository = tmp_path / "repository"
    (repository / "bare" / "1").mkdir(parents=True)
    (repository / "bare" / "1" / "model.onnx").write_bytes(reference_model.build_onnx("v1"))
    server = TritonServer("args", runtime, repository, tmp_path / "triton.log", extra_args=extra_args)
    server.start()
    try:
        return requests.post(f"{server.endpoints.http}/v2/repository/models/bare/load", timeout=60)
    finally:
        server.stop()


def test_manifest_option_reaches_the_embedded_server(gate_stack, tmp_path):
    refused = _load_without_config(gate_stack.runtime, tmp_path / "with", ["--disable-auto-complete-config"])
    assert refused.status_code != 200, "Triton auto-completed a config although it was told not to"
    assert "failed to poll from model repository" in refused.text, refused.text

    loaded = _load_without_config(gate_stack.runtime, tmp_path / "without", [])
    assert loaded.status_code == 200, f"without the option Triton completes the config itself: {loaded.text}"


def test_reference_stack_servers_run_with_the_manifests_options(gate_stack, gate_platform):
    for env in gate_platform.environments:
        process = gate_stack.environments[env].server.process
        assert process is not None
        for arg in gate_platform.spec.triton.args:
            assert arg in process.argv, f"{env}: {arg} missing from {process.argv}"
