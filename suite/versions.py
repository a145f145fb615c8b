"""What the stack really runs, asked of each running server (not of what we meant to install)."""

from __future__ import annotations

from importlib import metadata
from typing import Dict, Optional

import requests

UNKNOWN = "unknown"


def _get_json(url: str) -> Optional[dict]:
    try:
        response = requests.get(url, timeout=5)
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError):
        return None


def package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return UNKNOWN


def triton(http_url: str) -> str:
    body = _get_json(f"{http_url}/v2") or {}
    return body.get("version", UNKNOWN)


def mlflow(uri: str) -> str:
    try:
        response = requests.get(f"{uri}/version", timeout=5)
        return response.text.strip() if response.ok else UNKNOWN
    except requests.RequestException:
        return UNKNOWN


def prometheus(url: str) -> str:
    body = _get_json(f"{url}/api/v1/status/buildinfo") or {}
    return (body.get("data") or {}).get("version", UNKNOWN)


def alertmanager(url: str) -> str:
    body = _get_json(f"{url}/api/v2/status") or {}
    return (body.get("versionInfo") or {}).get("version", UNKNOWN)


def engine_packages() -> Dict[str, str]:
    """The libraries the embedded backend and the gate's own clients use."""
    return {
        "ONNX Runtime": package("onnxruntime"),
        "numpy": package("numpy"),
        "tritonclient": package("tritonclient"),
        "pytest": package("pytest"),
    }
