"""`suite.mlflow_launcher`: `mlflow server` whose uvicorn runs in the same process (one import of
mlflow), serving the same registry API, and ending with the stack."""

from __future__ import annotations

import psutil
import pytest
import requests

from suite.mlflow_launcher import _uvicorn_in_this_process
from suite.registry import MlflowServer


def test_the_registry_is_served_by_one_process_and_gone_after_stop(tmp_path):
    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    try:
        process = psutil.Process(server.process.pid)
        assert process.children(recursive=True) == []  # no second `python -m uvicorn` importing mlflow again
        assert "suite.mlflow_launcher" in process.cmdline()
        created = requests.post(f"{server.uri}/api/2.0/mlflow/registered-models/create", json={"name": "m"}, timeout=10)
        assert created.status_code == 200, created.text
        listed = requests.get(f"{server.uri}/api/2.0/mlflow/registered-models/search", timeout=10).json()
        assert [m["name"] for m in listed["registered_models"]] == ["m"]
    finally:
        server.stop()
    assert not psutil.pid_exists(process.pid) or process.status() == psutil.STATUS_ZOMBIE


def test_another_way_of_serving_than_uvicorn_is_refused_with_what_to_do():
    with pytest.raises(
        RuntimeError, match=r"expected MLflow to start `python -m uvicorn \.\.\.`, it started .* gunicorn"
    ):
        _uvicorn_in_this_process(["/usr/bin/python3", "-m", "gunicorn", "mlflow.server:app"], {})
