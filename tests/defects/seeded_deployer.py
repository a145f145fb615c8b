"""The builtin deploy command with one seeded defect, run as a platform's own deployer."""

from __future__ import annotations

# Usage (as `deployer: {command: ...}`): python seeded_deployer.py <defect> [extra deploy options]
# It replaces one part of the builtin path through its public extension point (suite.deploy's
# DeploySteps: a stage, a rollback step, the lock, the model folder or the golden check), then
# runs `python -m suite deploy` with those steps and the GATE_* variables the gate sets.
# Only `suite` is imported: the script runs from a platform copy.
import contextlib
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict

from suite.__main__ import main
from suite.deploy import DEFAULT_STEPS, ROLLBACK_STEPS, DeployContext, DeploySteps, load_version
from suite.model_repo import Current, ModelFolder


def http_200_smoke() -> DeploySteps:
    """The seed's smoke check: any answer is a pass, the outputs are never compared (the same
    check proves the live model at commit, so it goes live there too)."""

    def answered(ctx: DeployContext, model: str, version: int) -> None:
        ctx.environment.triton.infer(
            model, ctx.golden.inputs, list(ctx.golden.expected), version=version, timeout=ctx.settings.smoke_timeout
        )

    return replace(DEFAULT_STEPS, golden_check=answered)


def no_version_policy() -> DeploySteps:
    """config.pbtxt keeps Triton's default policy (latest: 1) instead of pinning the version."""

    def unpinned(ctx: DeployContext) -> None:
        DEFAULT_STEPS.materialize(ctx)
        ctx.config.ClearField("version_policy")

    return replace(DEFAULT_STEPS, materialize=unpinned)


def rollback_only_on_load() -> DeploySteps:
    """Rollback is wired to load/ready failures; a version failing smoke or commit stays."""

    def wired(step: Callable[[DeployContext], str]) -> Callable[[DeployContext], str]:
        def after_load_only(ctx: DeployContext) -> str:
            if ctx.failed_stage in (None, "load", "ready"):  # None: `recover` after a crash, left as it was
                return step(ctx)
            return f"not run: rollback is wired to load/ready failures, this one failed at {ctx.failed_stage}"

        return after_load_only

    return replace(DEFAULT_STEPS, **{name: wired(getattr(DEFAULT_STEPS, name)) for name in ROLLBACK_STEPS})


class DeletingFolder(ModelFolder):
    def quarantine(self, version: int, now=None) -> Path:
        path = self.version_path(version)
        shutil.rmtree(path)
        return path


def delete_failed_version() -> DeploySteps:
    """A failed version is deleted instead of renamed to N.failed_<UTC>."""
    return replace(DEFAULT_STEPS, model_folder=DeletingFolder)


class InPlaceCurrentFolder(ModelFolder):
    def write_current_bytes(self, data: bytes) -> None:
        with open(self.current_path, "wb") as handle:
            handle.write(data)

    def write_current(self, current: Current) -> None:
        self.write_current_bytes(current.to_json())


def current_json_in_place() -> DeploySteps:
    """current.json is rewritten in place (truncate, write), not temp file + os.replace."""
    return replace(DEFAULT_STEPS, model_folder=InPlaceCurrentFolder)


class InPlaceVersionFolder(ModelFolder):
    def materialize(self, version: int, fill: Callable[[Path], None]) -> bool:
        target = self.version_path(version)
        target.mkdir(parents=True, exist_ok=True)
        fill(target)
        return True


def materialize_in_place() -> DeploySteps:
    """The model is downloaded straight into version folder N: a cut download leaves half a version."""
    return replace(DEFAULT_STEPS, model_folder=InPlaceVersionFolder)


def no_lock() -> DeploySteps:
    """No per-environment deploy lock: two deploys at once interleave."""
    return replace(DEFAULT_STEPS, lock=lambda repository, timeout: contextlib.nullcontext())


def no_candidate() -> DeploySteps:
    """The new version is loaded straight into the live model: users get it before it is proven."""

    def load_live(ctx: DeployContext) -> None:
        load_version(ctx, ctx.model, ctx.config, ctx.version)

    def ready_live(ctx: DeployContext) -> None:
        ctx.environment.triton.wait_model_ready(ctx.model, ctx.version, ctx.settings.ready_timeout)

    def smoke_live(ctx: DeployContext) -> None:
        ctx.steps.golden_check(ctx, ctx.model, ctx.version)

    # Commit and rollback still unload the candidate name, which was never loaded: a no-op.
    return replace(DEFAULT_STEPS, load=load_live, ready=ready_live, smoke=smoke_live)


SEEDED: Dict[str, Callable[[], DeploySteps]] = {
    f.__name__.replace("_", "-"): f
    for f in [
        http_200_smoke,
        no_version_policy,
        rollback_only_on_load,
        delete_failed_version,
        current_json_in_place,
        materialize_in_place,
        no_lock,
        no_candidate,
    ]
}
# Defects that replace no step: the same path, run with other settings or another exit status.
PLAIN = {"exit-0-always", "smoke-timeout-30s"}


def run(defect: str, extra: list) -> int:
    if defect not in SEEDED and defect not in PLAIN:
        raise SystemExit(f"unknown defect {defect!r}: one of {sorted(SEEDED) + sorted(PLAIN)}")
    steps = SEEDED[defect]() if defect in SEEDED else DEFAULT_STEPS
    which = (
        ["--version", os.environ["GATE_VERSION"]]
        if os.environ.get("GATE_VERSION")
        else ["--alias", os.environ.get("GATE_ALIAS") or "A"]
    )
    if defect == "smoke-timeout-30s":
        extra = ["--smoke-timeout", "30", *extra]
    status = main(["deploy", "--env", os.environ["GATE_ENV"], *which, *extra], steps=steps)
    return 0 if defect == "exit-0-always" else status


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
