"""The platform manifest: the YAML file that describes the platform the gate verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from suite.errors import PlatformError
from suite.quarantine import QuarantineLayout


def _reference_dir() -> Path:
    """The reference platform: `deploy/` in a checkout, `suite/reference/` in an installed copy."""
    here = Path(__file__).resolve().parent
    checkout = here.parent / "deploy"
    return checkout if (checkout / "platform.yaml").is_file() else here / "reference"


REFERENCE_DIR = _reference_dir()


class _Strict(BaseModel):
    # Unknown keys are typos more often than extensions: refuse them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    name: str = Field(min_length=1)
    alias: str = Field(default="A", min_length=1)
    golden: Optional[str] = None  # path to the golden set, relative to the manifest


class ClusterEndpoints(_Strict):
    """How the gate, running in a pod of the cluster (`--target k8s`), reaches one environment."""

    triton_url: str = Field(min_length=1)  # http://triton.triton-dev.svc:8000
    triton_grpc: Optional[str] = None  # host:port; default: triton_url's host, 8001
    triton_metrics_url: Optional[str] = None  # default: triton_url's host, 8002/metrics
    prometheus_url: Optional[str] = None
    alertmanager_url: Optional[str] = None
    model_repository: Optional[str] = None  # the PVC as mounted in the gate's pod
    pod_selector: str = Field(default="app=triton", min_length=1)


class EnvironmentSpec(_Strict):
    namespace: str = Field(min_length=1)
    release: str = Field(min_length=1)
    alert_receiver: Optional[str] = None
    alert_namespaces: Optional[List[str]] = None
    # None: protected when the environment is named as production is (PRODUCTION_NAMES).
    protected: Optional[bool] = None
    cluster: Optional[ClusterEndpoints] = None


PerEnvPaths = Union[str, Dict[str, str]]


class MonitoringSpec(_Strict):
    rules: Optional[PerEnvPaths] = None
    alertmanager: Optional[Dict[str, str]] = None
    dashboard: Optional[str] = None


class DeployerSpec(_Strict):
    """Who deploys: the builtin path, or the platform's own command (README "Bring your own deployer")."""

    command: str = Field(default="builtin", min_length=1)
    # The platform's recovery after a deployer died half-way; None: the next deploy heals it.
    recover: Optional[str] = Field(default=None, min_length=1)
    # Variables of the gate's own environment handed to the command (names or fnmatch patterns);
    # nothing else leaks through (a fault must reach the deployer, never be bypassed by it).
    pass_env: List[str] = Field(default_factory=list)
    # Where a failed version is kept, relative to the model's folder (suite/quarantine.py).
    quarantine: str = Field(default="{version}.failed_{utc}", min_length=1)

    @field_validator("quarantine")
    @classmethod
    def _layout(cls, value: str) -> str:
        try:
            QuarantineLayout(value)
        except PlatformError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def builtin(self) -> bool:
        return self.command == "builtin"


class RegistrySpec(_Strict):
    mlflow_url: str = Field(min_length=1)  # the platform's MLflow, for deploys on `--target k8s`


class ImagesSpec(_Strict):
    """Images of `--target docker`; None keeps the defaults of suite/targets/docker.py."""

    triton: Optional[str] = None
    mlflow: Optional[str] = None
    prometheus: Optional[str] = None
    alertmanager: Optional[str] = None
    gate: Optional[str] = None  # the gate image itself, for the PostSync hook run in a container


# Options of the Triton servers the gate starts that are the gate's own: where the server listens,
# what it serves from, how models are controlled and loaded at start, how it exits.
GATE_OWNED_TRITON_OPTIONS = (
    "--model-repository",
    "--model-store",
    "--model-control-mode",
    "--load-model",
    "--backend-directory",
    "--http-address",
    "--http-port",
    "--grpc-address",
    "--grpc-port",
    "--metrics-address",
    "--metrics-port",
    "--allow-http",
    "--allow-grpc",
    "--allow-metrics",
    "--exit-on-error",
    "--exit-timeout-secs",
)


class TritonSpec(_Strict):
    """How the platform's Triton servers are started, beyond what the gate sets itself: the same
    options as the platform's own servers (its Deployment's args), so the embedded and container
    servers behave as the real ones do, for example `--disable-auto-complete-config`."""

    args: List[str] = Field(default_factory=list)

    @field_validator("args")
    @classmethod
    def _not_the_gates(cls, args: List[str]) -> List[str]:
        for arg in args:
            if not arg.startswith("--"):
                raise ValueError(f"{arg!r} is not a tritonserver option: write each as --name or --name=value")
            option = arg.split("=", 1)[0]
            if option in GATE_OWNED_TRITON_OPTIONS:
                raise ValueError(
                    f"{option} is set by the gate on every server it starts (free 127.0.0.1 ports, its own "
                    f"repositories, explicit model control); remove it from triton.args"
                )
        return args


class PlatformSpec(_Strict):
    model: ModelSpec
    environments: Dict[str, EnvironmentSpec] = Field(min_length=1)
    monitoring: Optional[MonitoringSpec] = None
    deployer: DeployerSpec = DeployerSpec()
    triton: TritonSpec = TritonSpec()
    registry: Optional[RegistrySpec] = None
    images: Optional[ImagesSpec] = None


# Environments protected unless the manifest says `protected: false` (suite/targets/guard.py).
PRODUCTION_NAMES = ("prod", "production")


def is_protected(env: str, spec: EnvironmentSpec) -> bool:
    """`protected:` from the manifest; when absent, an environment named as production is."""
    return spec.protected if spec.protected is not None else env in PRODUCTION_NAMES


class Platform:
    """A validated manifest plus the folder its relative paths are resolved against."""

    def __init__(self, spec: PlatformSpec, path: Path):
        self.spec = spec
        self.path = path
        self.base_dir = path.parent

    @property
    def model(self) -> ModelSpec:
        return self.spec.model

    @property
    def environments(self) -> Dict[str, EnvironmentSpec]:
        return self.spec.environments

    @property
    def trial_env(self) -> str:
        """Where the single-environment deploy and fault scenarios run: the manifest's first
        environment that is not protected, else its first (every other one is checked untouched)."""
        unprotected = [env for env, spec in self.environments.items() if not is_protected(env, spec)]
        return (unprotected or list(self.environments))[0]

    def other_envs(self, env: str) -> List[str]:
        return [other for other in self.environments if other != env]

    def resolve(self, relative: str) -> Path:
        """Return a manifest path made absolute; manifest paths are relative to its folder."""
        return (self.base_dir / relative).resolve()

    @property
    def quarantine(self) -> QuarantineLayout:
        """Where the platform's deployer keeps failed versions (manifest `deployer.quarantine`)."""
        return QuarantineLayout(self.spec.deployer.quarantine)

    def golden_path(self) -> Path:
        if self.model.golden:
            return self.resolve(self.model.golden)
        return REFERENCE_DIR / "golden" / f"{self.model.name}.json"

    def __repr__(self) -> str:
        return f"Platform({str(self.path)!r}, envs={sorted(self.environments)})"


def default_platform_path() -> Path:
    return REFERENCE_DIR / "platform.yaml"


def load_platform(path: Union[str, Path]) -> Platform:
    """Read and validate a manifest; every problem becomes a PlatformError saying what to fix."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise PlatformError(
            f"platform manifest {path} does not exist. Expected a YAML file describing your "
            f"platform (see {default_platform_path()} for the reference one); pass it with --platform."
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PlatformError(f"platform manifest {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise PlatformError(
            f"platform manifest {path} must be a YAML mapping with keys 'model' and "
            f"'environments'; it holds a {type(raw).__name__}."
        )
    try:
        spec = PlatformSpec.model_validate(raw)
    except ValidationError as exc:
        raise PlatformError(f"platform manifest {path} is invalid:\n{_explain(exc)}") from exc
    platform = Platform(spec, path)
    _check_files_exist(platform)
    return platform


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {where}: unknown key; check its spelling against the README")
        elif err["type"] == "missing":
            lines.append(f"  - {where}: required key is missing")
        else:
            lines.append(f"  - {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def _check_files_exist(platform: Platform) -> None:
    named: List[str] = []
    if platform.model.golden:
        named.append(platform.model.golden)
    mon = platform.spec.monitoring
    if mon is not None:
        for value in (mon.rules, mon.alertmanager, mon.dashboard):
            if isinstance(value, str):
                named.append(value)
            elif isinstance(value, dict):
                named.extend(value.values())
    missing = [p for p in named if not platform.resolve(p).is_file()]
    if missing:
        raise PlatformError(
            f"platform manifest {platform.path} names files that do not exist (paths are "
            f"relative to the manifest's folder {platform.base_dir}): "
            + ", ".join(str(platform.resolve(p)) for p in missing)
        )
