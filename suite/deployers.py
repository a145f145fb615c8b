"""Who runs a deploy: the builtin path, or the platform's own command (an Airflow DAG, a script).

Both are judged only on what they leave behind; the builtin one also reports its stages.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from suite.deploy import Deployer, DeployResult, DeploySettings, DeployTarget
from suite.golden import GoldenSet
from suite.invariants import DeployOutcome
from suite.registry import Registry
from suite.triton_client import TritonControl

BUILTIN = "builtin"


@dataclass
class DeployRequest:
    env: str
    repository: Path
    triton: TritonControl
    model: str
    mlflow_uri: str
    version: Optional[int] = None
    alias: Optional[str] = None
    settings: DeploySettings = field(default_factory=DeploySettings)


class BuiltinDeployer:
    name = BUILTIN

    def __init__(self, golden: GoldenSet):
        self.golden = golden
        self.last_result: Optional[DeployResult] = None

    def deploy(self, request: DeployRequest) -> DeployOutcome:
        deployer = Deployer(Registry(request.mlflow_uri), DeployTarget(request.env, request.repository, request.triton),
                            request.model, self.golden, request.settings)
        result = deployer.deploy(alias=request.alias, version=request.version)
        self.last_result = result
        return DeployOutcome(ok=result.ok, failed_stage=result.failed_stage, message=result.describe(),
                             result=result.to_dict())


class CommandDeployer:
    """Runs the platform's deploy command with the GATE_* variables; exit 0 means deployed."""

    def __init__(self, command: str, timeout: float = 600.0):
        self.command = command
        self.name = command
        self.timeout = timeout
        self.last_output = ""

    def environment(self, request: DeployRequest) -> dict:
        env = dict(os.environ)
        # The gate's own Python first: `python -m suite deploy` as the command finds this install.
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env.update({
            "GATE_ENV": request.env, "GATE_MODEL": request.model,
            "GATE_VERSION": "" if request.version is None else str(request.version),
            "GATE_ALIAS": request.alias or "",
            "GATE_MODEL_REPOSITORY": str(request.repository),
            "GATE_TRITON_URL": request.triton.http_url,
            "MLFLOW_TRACKING_URI": request.mlflow_uri,
        })
        return env

    def deploy(self, request: DeployRequest) -> DeployOutcome:
        try:
            proc = subprocess.run(["bash", "-c", self.command], env=self.environment(request), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            self.last_output = exc.stdout or ""
            return DeployOutcome(ok=False, message=f"deploy command timed out after {self.timeout:.0f} s: "
                                 f"{self.command}\n{self.last_output[-2000:]}", exit_code=None,
                                 failed_stage="timeout")
        self.last_output = proc.stdout
        tail = proc.stdout[-2000:]
        return DeployOutcome(ok=proc.returncode == 0, exit_code=proc.returncode,
                             message=f"`{self.command}` exited {proc.returncode}\n{tail}")


def make_deployer(command: str, golden: GoldenSet):
    return BuiltinDeployer(golden) if command == BUILTIN else CommandDeployer(command)
