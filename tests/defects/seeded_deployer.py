"""The builtin deploy command with one seeded defect, run as a platform's own deployer."""
from __future__ import annotations

# Usage (as `deployer: {command: ...}`): python seeded_deployer.py <defect> [extra deploy options]
# It patches one thing in the builtin deploy path, then runs `python -m suite deploy` with the
# GATE_* variables the gate sets. Only `suite` is imported: the script runs from a platform copy.
import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Dict

from suite import deploy, model_config, model_repo
from suite.__main__ import main


def http_200_smoke() -> None:
    """The seed's smoke check: any answer is a pass, the outputs are never compared."""
    def answered(self, model: str, version: int) -> None:
        self.target.triton.infer(model, self.golden.inputs, list(self.golden.expected), version=version,
                                 timeout=self.settings.smoke_timeout)
    deploy.Deployer._golden = answered


def no_version_policy() -> None:
    """config.pbtxt keeps Triton's default policy (latest: 1) instead of pinning the version."""
    def unpinned(config, version: int):
        out = type(config)()
        out.CopyFrom(config)
        out.ClearField("version_policy")
        return out
    model_config.pinned = unpinned


def rollback_only_on_load() -> None:
    """Rollback is wired to load/ready failures; a version failing smoke or commit stays."""
    original = deploy.Deployer._rollback

    def partial(self, result, *args) -> None:
        if result.failed_stage in ("load", "ready"):
            original(self, result, *args)
    deploy.Deployer._rollback = partial


def delete_failed_version() -> None:
    """A failed version is deleted instead of renamed to N.failed_<UTC>."""
    def delete(self, version: int, now=None) -> Path:
        path = self.version_path(version)
        shutil.rmtree(path)
        return path
    model_repo.ModelFolder.quarantine = delete


def current_json_in_place() -> None:
    """current.json is rewritten in place (truncate, write), not temp file + os.replace."""
    def write_bytes(self, data: bytes) -> None:
        with open(self.current_path, "wb") as handle:
            handle.write(data)
    model_repo.ModelFolder.write_current_bytes = write_bytes
    model_repo.ModelFolder.write_current = lambda self, current: write_bytes(self, current.to_json())


def materialize_in_place() -> None:
    """The model is downloaded straight into version folder N: a cut download leaves half a version."""
    def materialize(self, version: int, fill: Callable[[Path], None]) -> bool:
        target = self.version_path(version)
        target.mkdir(parents=True, exist_ok=True)
        fill(target)
        return True
    model_repo.ModelFolder.materialize = materialize


def no_lock() -> None:
    """No per-environment deploy lock: two deploys at once interleave."""
    deploy.environment_lock = lambda repository, timeout: contextlib.nullcontext()


def no_candidate() -> None:
    """The new version is loaded straight into the live model: users get it before it is proven."""
    deploy.Deployer.candidate = property(lambda self: self.model)
    # The "candidate" is the live model: unloading it after the switch would take the model down
    # (a second defect, which the gate reports as a baseline that cannot be made).
    deploy.Deployer._unload_candidate = lambda self: None


PATCHES: Dict[str, Callable[[], None]] = {f.__name__.replace("_", "-"): f for f in [
    http_200_smoke, no_version_policy, rollback_only_on_load, delete_failed_version, current_json_in_place,
    materialize_in_place, no_lock, no_candidate]}
# Defects that are not a patch: the same path, run with other settings or another exit status.
PLAIN = {"exit-0-always", "smoke-timeout-30s"}


def run(defect: str, extra: list) -> int:
    if defect in PATCHES:
        PATCHES[defect]()
    elif defect not in PLAIN:
        raise SystemExit(f"unknown defect {defect!r}: one of {sorted(PATCHES) + sorted(PLAIN)}")
    which = ["--version", os.environ["GATE_VERSION"]] if os.environ.get("GATE_VERSION") \
        else ["--alias", os.environ.get("GATE_ALIAS") or "A"]
    if defect == "smoke-timeout-30s":
        extra = ["--smoke-timeout", "30", *extra]
    status = main(["deploy", "--env", os.environ["GATE_ENV"], *which, *extra])
    return 0 if defect == "exit-0-always" else status


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
