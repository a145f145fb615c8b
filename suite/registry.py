"""The MLflow model registry: the embedded tracking server, and the deploy path's client."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional

import yaml

from suite.errors import RegistryError
from suite.files import replacing
from suite.processes import ServerProcess, free_port, start_on_free_ports

# MLflow's client retries an unreachable server for minutes by default; a deploy should fail
# in seconds and say why. Users may still raise these through the environment.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


class MlflowServer:
    """`mlflow server` with a sqlite store and a local artifact store, on 127.0.0.1 (started through
    `suite.mlflow_launcher`, which saves the wrapper's second import of mlflow: seconds a session)."""

    def __init__(self, workdir: Path, start_timeout: float = 90.0):
        self.workdir = Path(workdir)
        self._choose_port()
        self.start_timeout = start_timeout
        self.process: Optional[ServerProcess] = None

    def _choose_port(self) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.workdir / "mlflow.db"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fresh = not self.database.exists()
        if fresh:
            restore_empty_store(self.database)
        start_on_free_ports(self._start_once, self._choose_port)
        if fresh:
            keep_empty_store(self.database)

    def _start_once(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "suite.mlflow_launcher",  # `mlflow server`, with its uvicorn in the same process: one import
            "--backend-store-uri",
            f"sqlite:///{self.database}",
            "--artifacts-destination",
            str(self.workdir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        # The job runner and huey consumers are not needed and would outlive a careless stop.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = ServerProcess(
            "mlflow server",
            argv,
            ready_url=f"{self.uri}/health",
            log_path=self.workdir / "mlflow.log",
            env=env,
            cwd=self.workdir,
            start_timeout=self.start_timeout,
            stop_grace=3.0,
            ports=[self.port],
        )
        self.process.start()

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    @property
    def artifacts_root(self) -> Path:
        return self.workdir / "artifacts"


# A new sqlite store costs MLflow ~5 s of schema migrations at every start. The empty store MLflow
# made the first time is kept (per MLflow version) and copied in later: same schema, same rows.
def _empty_store_template() -> Path:
    from importlib.metadata import version

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "triton-gate"
    return cache / f"mlflow-{version('mlflow')}-empty-store.db"


def restore_empty_store(database: Path) -> None:
    template = _empty_store_template()
    if template.is_file():
        shutil.copyfile(template, database)


def keep_empty_store(database: Path) -> None:
    """Snapshot the store MLflow just created (nothing registered yet) with sqlite's backup API."""
    import sqlite3

    template = _empty_store_template()
    if template.is_file():
        return
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with (
            replacing(template) as partial,
            closing(sqlite3.connect(database)) as source,
            closing(sqlite3.connect(partial)) as copy,
        ):
            source.backup(copy)
    except (OSError, sqlite3.Error):
        pass  # only a speed-up: the next start migrates a new store again


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: int
    run_id: str
    alias: str  # the alias it was resolved through, "" when asked by number


class Registry:
    """What the deploy path needs from MLflow: resolve, download, and (for fixtures) register."""

    def __init__(self, tracking_uri: str):
        self.tracking_uri = tracking_uri
        self._client = None

    @property
    def client(self):
        # mlflow takes seconds to import: paid only when the registry is really used
        # (`recover`, for one, never needs it).
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def resolve(self, name: str, alias: Optional[str] = None, version: Optional[int] = None) -> RegisteredVersion:
        from mlflow.exceptions import MlflowException

        if (alias is None) == (version is None):
            raise RegistryError("give exactly one of an alias or a version to deploy")
        try:
            if version is not None:
                mv = self.client.get_model_version(name, str(version))
            else:
                mv = self.client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            raise RegistryError(self._explain_missing(name, alias, version, exc)) from None
        return RegisteredVersion(name, int(mv.version), mv.run_id or "", alias or "")

    def _explain_missing(self, name: str, alias: Optional[str], version: Optional[int], exc: Exception) -> str:
        from mlflow.exceptions import MlflowException

        wanted = f"alias {alias!r}" if alias is not None else f"version {version}"
        if getattr(exc, "error_code", "") not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return (
                f"cannot reach the MLflow registry at {self.tracking_uri} to resolve {wanted} of "
                f"model {name!r}: {str(exc).splitlines()[0]}. Check MLFLOW_TRACKING_URI and that "
                f"the server is up."
            )
        try:
            model = self.client.get_registered_model(name)
            versions = sorted(int(v.version) for v in self.client.search_model_versions(f"name='{name}'"))
            aliases = dict(model.aliases or {})
            seen = f"it has versions {versions} and aliases {aliases}"
        except MlflowException:
            seen = "no registered model of that name exists"
        return (
            f"{wanted} of model {name!r} is not in the MLflow registry at {self.tracking_uri}; "
            f"{seen}. Register the model or point the alias at a version "
            f"(MlflowClient().set_registered_model_alias({name!r}, 'A', <version>))."
        )

    def download_model_file(self, name: str, version: int, dest: Path, filename: str = "model.onnx") -> Path:
        """Download registry version N and place its ONNX file at `dest/filename`."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        dest.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=dest.parent))
        try:
            # Where the version's files are, asked of this registry: MLflow resolves a
            # `models:/<name>/<version>` URI with the process-wide registry URI whatever it is
            # passed (ModelsArtifactRepository._get_model_uri_infos), which the last register_onnx
            # set, maybe for a stack long stopped (seen in our tests, with several stacks in a process).
            location = self.client.get_model_version_download_uri(name, str(version))
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=location, dst_path=str(scratch), tracking_uri=self.tracking_uri
                )
            )
            onnx_file = local / _onnx_filename(local)
            if not onnx_file.is_file():
                raise RegistryError(
                    f"registry version {version} of {name!r} has no ONNX file "
                    f"{onnx_file.name} in its artifacts ({sorted(os.listdir(local))})."
                )
            shutil.move(str(onnx_file), dest / filename)
            return dest / filename
        except MlflowException as exc:
            raise RegistryError(
                f"downloading version {version} of {name!r} from {self.tracking_uri} failed: {str(exc).splitlines()[0]}"
            ) from None
        except OSError as exc:
            raise RegistryError(f"downloading version {version} of {name!r} failed: {exc}") from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # -- registering (used by fixtures and by platform teams' training jobs) --------------

    def register_onnx(
        self, name: str, model: bytes, alias: Optional[str] = None, tags: Optional[Dict[str, str]] = None
    ) -> RegisteredVersion:
        import mlflow
        import mlflow.onnx
        import onnx

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        mlflow.set_experiment("triton-gate")
        with mlflow.start_run() as run:
            if tags:
                mlflow.set_tags(tags)
            # Explicit requirements: inferring them spawns a Python subprocess (~2.5 s a version).
            info = mlflow.onnx.log_model(
                onnx.load_from_string(model),
                name="model",
                registered_model_name=name,
                save_as_external_data=False,
                pip_requirements=["onnx", "onnxruntime"],
            )
        version = int(info.registered_model_version)
        if alias:
            self.client.set_registered_model_alias(name, alias, str(version))
        return RegisteredVersion(name, version, run.info.run_id, alias or "")

    def stored_model_file(self, artifacts_root: Path, name: str, version: int) -> Path:
        """Where a local artifact store keeps version N's model.onnx (embedded MLflow only)."""
        source = self.client.get_model_version(name, str(version)).source  # models:/m-<id>
        model_id = source.rsplit("/", 1)[-1]
        matches = list(Path(artifacts_root).glob(f"*/models/{model_id}/artifacts/model.onnx"))
        if len(matches) != 1:
            raise RegistryError(
                f"cannot find the stored model file of {name} v{version} ({source}) "
                f"under {artifacts_root}: found {matches}"
            )
        return matches[0]

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(name, alias)

    def alias_version(self, name: str, alias: str) -> Optional[int]:
        """The version `alias` points at; None when the model or the alias does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise RegistryError(
                f"MLflow {self.tracking_uri} did not say where alias {alias!r} of {name} points: {exc}"
            ) from exc
        version = (model.aliases or {}).get(alias)
        return int(version) if version is not None else None

    def put_alias_back(self, name: str, alias: str, version: Optional[int]) -> None:
        """Point `alias` at `version` again (None: it pointed nowhere, remove it)."""
        if self.alias_version(name, alias) == version:
            return
        try:
            if version is None:
                self.delete_alias(name, alias)
            else:
                self.set_alias(name, alias, version)
        except Exception as exc:  # noqa: BLE001 - MlflowException, connection errors: say what is left
            raise RegistryError(
                f"could not put alias {alias!r} of {name} back on "
                f"{'nothing' if version is None else f'v{version}'} in MLflow {self.tracking_uri}: {exc}. "
                f"It still points where the gate moved it; set it back by hand "
                f"(MlflowClient().set_registered_model_alias({name!r}, {alias!r}, <version>))."
            ) from exc

    @contextmanager
    def alias_kept(self, name: str, alias: str) -> Iterator[Optional[int]]:
        """Whatever happens inside, `alias` points where it points now again on leaving (nowhere
        included); yields that version."""
        before = self.alias_version(name, alias)
        try:
            yield before
        finally:
            self.put_alias_back(name, alias, before)


def _onnx_filename(model_dir: Path) -> str:
    """The ONNX file an MLflow model folder names in its MLmodel file."""
    try:
        mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
        return mlmodel["flavors"]["onnx"]["data"]
    except (OSError, KeyError, TypeError) as exc:
        raise RegistryError(
            f"{model_dir} is not an MLflow ONNX model (MLmodel without an onnx "
            f"flavor: {exc!r}); register it with mlflow.onnx.log_model."
        ) from None
