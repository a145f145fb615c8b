"""Who runs a deploy: the builtin path, or the platform's own command (an Airflow DAG, a script).

Both are judged only on what they leave behind. A command runs in its own process group with an
environment the gate builds explicitly (documented variables plus the manifest's `pass_env`),
so a fault the gate injects (an unreachable registry, a cutting proxy) is what the deployer sees.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Optional

from suite.deploy import Deployer, DeployResult, DeploySettings
from suite.environment import Environment
from suite.golden import GoldenSet
from suite.ownership import OwnedGroup, tagged
from suite.processes import Watchdog
from suite.registry import Registry
from suite.waiting import WaitTimeout, wait_for

BUILTIN = "builtin"
# The builtin path as a command, for scenarios that pause or kill the deployer's process.
BUILTIN_COMMAND = 'python -m suite deploy --env "$GATE_ENV"'
BUILTIN_RECOVER = 'python -m suite recover --env "$GATE_ENV"'
# What a command gets of the gate's own environment besides the GATE_* variables: what any
# process needs to run, nothing that points at a server (README "Bring your own deployer").
BASE_VARIABLES = ("HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME", "TERM")
OUTPUT_TAIL = 4000


@dataclass
class DeployRequest:
    """One deploy: which model version into which environment, from which registry."""

    environment: Environment
    model: str
    mlflow_uri: str
    version: Optional[int] = None
    alias: Optional[str] = None
    settings: DeploySettings = field(default_factory=DeploySettings)
    golden_path: Optional[Path] = None
    # Settings a command may honour (GATE_SMOKE_TIMEOUT); the builtin path always does.
    hints: Dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> str:
        return self.environment.name

    @property
    def requested(self) -> str:
        return f"alias {self.alias}" if self.alias is not None else f"version {self.version}"


@dataclass
class DeployOutcome:
    """What a deployer reported: the builtin path's result, or a command's exit status and output."""

    ok: bool
    failed_stage: Optional[str] = None
    message: str = ""
    exit_code: Optional[int] = None
    result: Optional[dict] = None  # the builtin path's stage records (DeployResult.to_dict())
    deployer: str = ""  # "builtin" or the manifest's command
    env: str = ""
    requested: str = ""
    duration_s: float = 0.0
    started_at: float = 0.0

    def record(self) -> dict:
        """The deploy as the reports show it: which deployer, what it did, how long, what it said."""
        if self.result is not None:
            return {**self.result, "deployer": self.deployer or BUILTIN}
        outcome = "passed" if self.ok else "failed"
        return {
            "deployer": self.deployer,
            "env": self.env,
            "requested": self.requested,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "failed_stage": self.failed_stage,
            "started_at": self.started_at,
            "error": "" if self.ok else self.message[-OUTPUT_TAIL:],
            "stages": [
                {
                    "name": "command",
                    "outcome": outcome,
                    "duration_s": round(self.duration_s, 4),
                    "detail": f"exit {self.exit_code}" if self.exit_code is not None else self.failed_stage or "",
                }
            ],
            "rollback": [],
            "recovered": [],
        }

    def to_dict(self) -> dict:
        return asdict(self)


class BuiltinDeployer:
    name = BUILTIN

    def __init__(self, golden: GoldenSet):
        self.golden = golden
        self.last_result: Optional[DeployResult] = None

    def _path(self, request: DeployRequest) -> Deployer:
        return Deployer(Registry(request.mlflow_uri), request.environment, request.model, self.golden, request.settings)

    def deploy(self, request: DeployRequest) -> DeployOutcome:
        started = time.time()
        result = self._path(request).deploy(alias=request.alias, version=request.version)
        self.last_result = result
        return DeployOutcome(
            ok=result.ok,
            failed_stage=result.failed_stage,
            message=result.describe(),
            result=result.to_dict(),
            deployer=BUILTIN,
            env=request.env,
            requested=request.requested,
            duration_s=time.time() - started,
            started_at=started,
        )

    def recover(self, request: DeployRequest) -> Optional[DeployOutcome]:
        started = time.time()
        records = self._path(request).recover()
        ok = all(r.outcome == "passed" for r in records)
        lines = [f"  {r.name:<18} {r.outcome:<8} {r.detail}" for r in records]
        return DeployOutcome(
            ok=ok,
            message="recover:\n" + "\n".join(lines),
            deployer=BUILTIN,
            env=request.env,
            requested="recover",
            duration_s=time.time() - started,
            started_at=started,
        )

    def as_command(self, pass_env: Iterable[str] = ()) -> "CommandDeployer":
        """The same path as its command line, for scenarios that must pause or kill the deployer."""
        return CommandDeployer(BUILTIN_COMMAND, recover=BUILTIN_RECOVER, pass_env=pass_env, name=BUILTIN)


class CommandDeployer:
    """Runs the platform's deploy command (bash -c) with the GATE_* variables; exit 0 means deployed."""

    def __init__(
        self,
        command: str,
        recover: Optional[str] = None,
        pass_env: Iterable[str] = (),
        timeout_s: float = 600.0,
        name: Optional[str] = None,
    ):
        self.command = command
        self.recover_command = recover
        self.pass_env = list(pass_env)
        self.timeout_s = timeout_s
        self.name = name or command

    def as_command(self, pass_env: Iterable[str] = ()) -> "CommandDeployer":
        return self

    def environment(self, request: DeployRequest) -> Dict[str, str]:
        """Built from scratch: the basics, the user's `pass_env`, then the documented variables."""
        env = {k: v for k, v in os.environ.items() if k in BASE_VARIABLES}
        env.update({k: v for k, v in os.environ.items() if any(fnmatch.fnmatchcase(k, p) for p in self.pass_env)})
        # The gate's own Python first: `python -m suite deploy` as the command finds this install.
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", os.defpath)
        env.update(
            {
                "GATE_ENV": request.env,
                "GATE_MODEL": request.model,
                "GATE_VERSION": "" if request.version is None else str(request.version),
                "GATE_ALIAS": request.alias or "",
                "GATE_MODEL_REPOSITORY": str(request.environment.repository),
                "GATE_TRITON_URL": request.environment.triton.http_url,
                "GATE_QUARANTINE": request.settings.quarantine,
                "GATE_GOLDEN": str(request.golden_path or ""),
                # Both: mlflow reads the registry URI apart from the tracking one.
                "MLFLOW_TRACKING_URI": request.mlflow_uri,
                "MLFLOW_REGISTRY_URI": request.mlflow_uri,
            }
        )
        env.update(request.hints)
        return env

    def start(self, request: DeployRequest, command: Optional[str] = None) -> "DeployProcess":
        command = command or self.command
        return DeployProcess(
            command,
            self.environment(request),
            self.timeout_s,
            deployer=self.name,
            env=request.env,
            requested=request.requested if command == self.command else "recover",
        )

    def deploy(self, request: DeployRequest) -> DeployOutcome:
        return self.start(request).wait()

    def recover(self, request: DeployRequest) -> Optional[DeployOutcome]:
        """Run the platform's declared recovery; None when it declares none."""
        if not self.recover_command:
            return None
        return self.start(request, self.recover_command).wait()


class DeployProcess:
    """One deploy command running in its own process group, which the gate may pause or kill.

    The group leader (bash) is reaped only after its group has been SIGKILLed: until then its
    pid, which is the group id, cannot be reused, so a signal never reaches another's process.
    """

    def __init__(
        self, command: str, environ: Dict[str, str], timeout_s: float, deployer: str, env: str = "", requested: str = ""
    ):
        self.command = command
        self.timeout_s = timeout_s
        self.deployer = deployer
        self.env = env
        self.requested = requested
        self._output = tempfile.TemporaryFile(mode="w+b")
        self.started_at = time.time()
        self._begin = time.perf_counter()
        self.proc = subprocess.Popen(
            ["bash", "-c", command],
            env=tagged(environ),
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.group = OwnedGroup.of(self.proc.pid)
        Watchdog.shared().watch(self.group)

    @property
    def pgid(self) -> int:
        return self.proc.pid

    def exited(self) -> bool:
        """Whether the command's main process has ended (without reaping it)."""
        if self.proc.returncode is not None:
            return True
        return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def signal(self, sig: int) -> None:
        """Signal the whole group (SIGSTOP, SIGCONT, SIGKILL); a no-op once it has been reaped."""
        if self.proc.returncode is not None:
            return
        self.group.signal(sig)

    def wait(self) -> DeployOutcome:
        try:
            wait_for(self.exited, timeout_s=self.timeout_s, interval_s=0.02, awaiting=f"`{self.command}` to exit")
        except WaitTimeout:
            pass  # still running: killed below and reported as the "timeout" stage
        finally:  # also on Ctrl-C: the deployer and what it started must not outlive the gate
            timed_out = not self.exited()
            self.signal(signal.SIGKILL)
            self.proc.wait()
            Watchdog.shared().forget(self.group)
        duration = time.perf_counter() - self._begin
        self._output.seek(0)
        tail = self._output.read().decode(errors="replace")[-OUTPUT_TAIL:]
        self._output.close()
        common = dict(
            deployer=self.deployer,
            env=self.env,
            requested=self.requested,
            duration_s=duration,
            started_at=self.started_at,
        )
        if timed_out:
            return DeployOutcome(
                ok=False,
                failed_stage="timeout",
                exit_code=None,
                message=f"deploy command timed out after {self.timeout_s:.0f} s: {self.command}\n{tail}",
                **common,
            )
        code = self.proc.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
        return DeployOutcome(ok=code == 0, exit_code=code, message=f"`{self.command}` {how}\n{tail}", **common)


def make_deployer(spec, golden: GoldenSet):
    """The platform's deployer from its manifest section (suite.platform.DeployerSpec)."""
    if spec.builtin:
        return BuiltinDeployer(golden)
    return CommandDeployer(spec.command, recover=spec.recover, pass_env=spec.pass_env)
