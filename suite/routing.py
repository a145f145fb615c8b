"""Alert routing: the policy a platform states, and what its Alertmanager really does."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set

from suite.monitoring_stack import find_binary
from suite.platform import Platform

NULL = "null"


@dataclass(frozen=True)
class LabelSet:
    labels: tuple  # sorted (name, value) pairs

    @classmethod
    def of(cls, **labels: str) -> "LabelSet":
        return cls(tuple(sorted(labels.items())))

    def as_dict(self) -> Dict[str, str]:
        return dict(self.labels)

    def __str__(self) -> str:
        return "{" + ", ".join(f"{k}={v!r}" for k, v in self.labels) + "}"


class RoutingPolicy:
    """An env's channel gets exactly the alerts whose namespace its `alert_namespaces` allow
    (default: the env's namespace only); everything else goes to "null"."""

    def __init__(self, platform: Platform):
        self.platform = platform

    def patterns(self, env: str) -> List[str]:
        spec = self.platform.environments[env]
        return list(spec.alert_namespaces or [re.escape(spec.namespace)])

    def receiver(self, env: str) -> Optional[str]:
        return self.platform.environments[env].alert_receiver

    def expected(self, env: str, labels: Dict[str, str]) -> Set[str]:
        namespace = labels.get("namespace")
        if namespace is not None and any(re.fullmatch(p, namespace) for p in self.patterns(env)):
            return {self.receiver(env)}
        return {NULL}

    def forbidden(self, env: str) -> Set[str]:
        """Receivers of the other environments: never reachable from this env's Alertmanager."""
        own = self.receiver(env)
        return {
            spec.alert_receiver
            for name, spec in self.platform.environments.items()
            if name != env and spec.alert_receiver and spec.alert_receiver != own
        }

    def label_sets(self, alertnames: List[str]) -> List[LabelSet]:
        """Both envs' namespaces, unrelated ones, none, and look-alikes, for each alert name."""
        namespaces: Set[Optional[str]] = {
            None,
            "default",
            "monitoring",
            "kube-system",
            "triton",
            "triton-prod-canary",
            "xtriton-dev",
            "triton-dev-old",
            "prod",
        }
        for spec in self.platform.environments.values():
            namespaces |= {spec.namespace, spec.release, f"{spec.namespace}-canary", f"x{spec.namespace}"}
        sets = []
        for alertname in alertnames:
            for namespace in sorted(namespaces, key=str):
                labels = {"alertname": alertname, "severity": "critical", "service": "triton"}
                if namespace is not None:
                    labels["namespace"] = namespace
                sets.append(LabelSet.of(**labels))
        return sets


def amtool_receivers(config_path: Path, labels: Dict[str, str]) -> Set[str]:
    """Receivers `amtool config routes test` reaches for a label set (Alertmanager's own routing)."""
    amtool = find_binary(["amtool"], "prometheus-alertmanager")
    argv = [amtool, "config", "routes", "test", f"--config.file={config_path}"]
    argv += [f"{k}={_quote(v)}" for k, v in sorted(labels.items())]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode not in (0, 1):  # 1: --verify.receivers mismatch; we do not use it
        raise RuntimeError(f"amtool failed ({proc.returncode}): {proc.stderr.strip()}")
    return {r.strip() for r in proc.stdout.strip().split(",") if r.strip()}


def _quote(value: str) -> str:
    # amtool parses `name=value` as a matcher: quote so dashes and dots stay literal
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
