"""What every target provides (`--target local|docker|k8s`), written down once.

The pytest fixtures only talk to these two interfaces; they never ask which target was chosen.
A new target is one module with a class satisfying `Target` (and a `Stack` it starts) plus one
line in `suite.targets.TARGETS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Dict, List, Optional, Protocol, Tuple

if TYPE_CHECKING:
    from suite.environment import Environment
    from suite.platform import Platform
    from suite.registry import Registry


@dataclass(frozen=True)
class TargetOptions:
    """The command line options of the targets (each target reads the ones it knows)."""

    allow_destructive: bool = False
    triton_image: Optional[str] = None
    kubeconfig: Optional[str] = None
    kube_context: Optional[str] = None


class Mlflow(Protocol):
    uri: Optional[str]  # None: a cluster whose manifest names no registry
    artifacts_root: Optional[Path]  # the registry's artifact folder, when the gate can reach it


class Stack(Protocol):
    """A running platform: MLflow plus one environment per manifest environment."""

    environments: Dict[str, Environment]
    mlflow: Mlflow
    timings: Dict[str, float]  # start-up seconds by part, for the reports

    def registry(self) -> Registry: ...

    def extra_environment(self, name: str, repository: Path) -> Environment:
        """One more Triton on its own repository (a fault's small filesystem); the caller stops it."""

    def dead_servers(self) -> List[str]:
        """A description (with its log) of every server of the stack that stopped on its own."""

    def describe(self) -> Dict[str, str]:
        """What the reports list beside the servers' versions (engine packages, images...)."""

    def stop(self) -> None: ...


class Monitoring(Protocol):
    """Per environment its Prometheus and Alertmanager (`environments[env]`)."""

    environments: Dict[str, object]

    def start(self) -> object: ...

    def stop(self) -> None: ...


class Target(Protocol):
    name: ClassVar[str]  # the `--target` value
    accepts: ClassVar[Tuple[str, ...]]  # the TargetOptions it reads; any other one given is a usage error
    title: ClassVar[str]  # what messages call its stack: "the embedded stack did not start"
    options: TargetOptions
    # True: the platform is the gate's own, thrown away at the end: it makes each environment's
    # verified baseline with the platform's deployer and restores it before every scenario
    # (suite/baseline.py). False: the platform is the user's, shared and long-lived: the gate
    # keeps no baseline, reads what the platform committed, and puts the registry's alias back.
    deploys: ClassVar[bool]
    # True: protected environments refuse destructive scenarios (suite/targets/guard.py).
    guarded: ClassVar[bool]
    # What scenarios may ask of it beyond deploying (suite/targets/capabilities.py); a scenario
    # needing one the target lacks is skipped at setup, before it changes anything.
    controls_servers: ClassVar[bool]  # kill, stop, start, restart an environment's Triton
    starts_environments: ClassVar[bool]  # one more Triton on a repository (Stack.extra_environment)
    registry_files: ClassVar[bool]  # the registry's artifact files on the gate's disk (Mlflow.artifacts_root)

    def problem(self) -> Optional[str]:
        """None when the target can be reached, else why not (every scenario needing it skips)."""

    def start_stack(self, platform: Platform, workdir: Path) -> Stack:
        """The started stack; raises StackStartError or EnvironmentProblem, having cleaned up."""

    def monitoring(self, platform: Platform, stack: Stack, workdir: Path) -> Monitoring:
        """The monitoring of the stack's environments, not started yet."""

    def committed_version(self, stack: Stack, model: str, env: str) -> int:
        """For a target that never deploys: the version the platform committed in `env`."""


class TargetBase:
    """What the targets share: their options, and `problem()` asked of the world once a session
    (an engine ping, a cluster's /version) through `probe()`."""

    accepts: ClassVar[Tuple[str, ...]] = ("allow_destructive",)

    def __init__(self, options: TargetOptions = TargetOptions()):
        self.options = options
        self._probed: List[Optional[str]] = []  # empty: not asked yet

    def probe(self) -> Optional[str]:
        return None

    def problem(self) -> Optional[str]:
        if not self._probed:
            self._probed.append(self.probe())
        return self._probed[0]

    def committed_version(self, stack: Stack, model: str, env: str) -> int:
        raise NotImplementedError(
            f"the {getattr(self, 'name', '?')} target deploys: the baseline knows what it committed"
        )
