"""Which environments are protected, and the refusal of destructive scenarios on them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, List, Mapping, Optional, Sequence

from suite.errors import GateError
from suite.platform import EnvironmentSpec, is_protected

if TYPE_CHECKING:
    from suite.targets.protocol import Target

# Markers of scenarios that change what the platform serves (deploys, faults, kills).
DESTRUCTIVE_MARKERS = ("chaos", "deploy")
# Fixtures that register, deploy or inject: a scenario using one changes the platform whatever
# its marker (the live alert scenarios kill Triton and deploy a slow model).
CHANGING_FIXTURES = (
    "deploy",
    "run_fault",
    "make_environment",
    "register_model",
    "make_model_version",
    "reference_versions",
)


class DestructiveRefused(GateError):
    """Raised when a destructive scenario would run on a protected environment without permission."""


def destructive_reasons(markers: Iterable[str], fixtures: Iterable[str] = ()) -> List[str]:
    """Why a scenario changes the platform: its markers, else the changing fixtures it uses."""
    marked = [f"marked {m}" for m in sorted(set(markers) & set(DESTRUCTIVE_MARKERS))]
    used = [f"uses fixture {f}" for f in CHANGING_FIXTURES if f in set(fixtures)]
    return marked or used[:1]


def refusal(
    target: "Target",
    reasons: Sequence[str],
    envs: Iterable[str],
    specs: Mapping[str, EnvironmentSpec],
    allow_destructive: bool,
    env_known: bool = True,
) -> Optional[str]:
    """The refusal message for a scenario (`reasons` from destructive_reasons), or None.

    `env_known` False: the scenario names no environment, so it may touch all of `envs`. Only a
    guarded target (a shared, long-lived platform) can be harmed: the gate's own stacks are thrown away."""
    if not target.guarded or not reasons or allow_destructive:
        return None
    protected = [e for e in envs if e in specs and is_protected(e, specs[e])]
    if not protected:
        return None
    env = protected[0]
    how = (
        "marked `protected: true` in the platform manifest"
        if specs[env].protected
        else f"protected by default because it is named {env}"
    )
    scope = "" if env_known else " (the scenario has no env parameter, so it may touch every environment)"
    return (
        f"--target {target.name}: refused to run a destructive scenario ({', '.join(reasons)}) "
        f"on protected environment {env!r} (namespace {specs[env].namespace}){scope}. "
        f"Expected --allow-destructive for a protected environment; seen: {env} is {how} and "
        f"--allow-destructive was not given. To run it: pass --allow-destructive (it changes what "
        f"{env} serves), or set `protected: false` for {env} in the manifest, or select "
        f"a read-only subset with -m smoke."
    )


def check(
    target: "Target",
    reasons: Sequence[str],
    envs: Iterable[str],
    specs: Mapping[str, EnvironmentSpec],
    allow_destructive: bool,
    env_known: bool = True,
) -> None:
    """Raise DestructiveRefused with the refusal message when the scenario may not run."""
    message = refusal(target, reasons, envs, specs, allow_destructive, env_known)
    if message:
        raise DestructiveRefused(message)
