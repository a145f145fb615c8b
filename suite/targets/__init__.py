"""Where the gate runs its scenarios. Each target is one module with a class that satisfies
`suite.targets.protocol.Target`; this table maps the `--target` name to it. The module is
imported only when its target is chosen (docker-py and kubernetes load only when needed)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Dict

if TYPE_CHECKING:
    from suite.targets.protocol import Target, TargetOptions

TARGETS: Dict[str, str] = {
    "local": "suite.targets.local:LocalTarget",  # the embedded stack: processes on this machine
    "docker": "suite.targets.docker:DockerTarget",  # the same servers as containers
    "k8s": "suite.targets.k8s:ClusterTarget",  # a running cluster, read through its endpoints
}


def target_class(name: str) -> type:
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; expected one of {sorted(TARGETS)}")
    module, _, cls = TARGETS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def load_target(name: str, options: "TargetOptions") -> "Target":
    return target_class(name)(options)
