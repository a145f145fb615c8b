"""Stack targets beyond the embedded one: Docker containers (`docker.py`) and clusters (`k8s.py`)."""
from __future__ import annotations

TARGETS = ("local", "docker", "k8s")
