"""A stand-in for the Kubernetes API server, for the `--target k8s` smoke in the project's tests:
no Kubernetes cluster can run on the project's machines. Everything around it is real."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Callable, Dict, Optional, Union

import yaml


class KubeApiStandIn:
    """The two calls the k8s smoke makes of the API server (/version, pods by label), answered
    like a real one. A stand-in: no Kubernetes cluster can run on the project's machines.
    `ready` per namespace decides what the Triton pod reports: a bool, or a function asked at
    each request (e.g. the state of a real Triton container)."""

    def __init__(self, ready: Optional[Dict[str, Union[bool, Callable[[], bool]]]] = None) -> None:
        self.ready = ready or {"triton-dev": True, "triton-prod": True}
        self.requests: list = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                if self.path.startswith("/version"):
                    body = {
                        "major": "1",
                        "minor": "31",
                        "gitVersion": "v1.31.0",
                        "gitCommit": "0" * 40,
                        "gitTreeState": "clean",
                        "buildDate": "2026-10-01T00:00:00Z",
                        "goVersion": "go1.23",
                        "compiler": "gc",
                        "platform": "linux/amd64",
                    }
                else:
                    namespace = self.path.split("/namespaces/")[1].split("/")[0]
                    body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [owner.pod(namespace)]}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pod(self, namespace: str) -> dict:
        ready = self.ready[namespace]
        ready = bool(ready() if callable(ready) else ready)
        state = {"running": {}} if ready else {"waiting": {"reason": "ContainerCreating"}}
        return {
            "metadata": {"name": "triton-7d9f-x2", "namespace": namespace},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": str(ready)}],
                "containerStatuses": [
                    {"name": "triton", "ready": ready, "restartCount": 0, "image": "i", "imageID": "", "state": state}
                ],
            },
        }


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "gate",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "gate", "context": {"cluster": "c", "user": "u", "namespace": "triton-dev"}}],
            }
        )
    )
    return path


POD_SELECTOR = "app.kubernetes.io/name=triton"  # the Deployment's pod labels in deploy/gitops


def cluster_section(endpoints, model_repository: str, **more: str) -> dict:
    """A manifest environment's `cluster:` section pointing at a running Triton's `endpoints`
    (a TritonEndpoints) and its repository as the gate's pod sees it; `more` adds e.g. the
    environment's Prometheus and Alertmanager URLs."""
    return {
        "triton_url": endpoints.http,
        "triton_grpc": endpoints.grpc,
        "triton_metrics_url": endpoints.metrics,
        "model_repository": model_repository,
        "pod_selector": POD_SELECTOR,
        **more,
    }
