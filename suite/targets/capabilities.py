"""What a target lets a scenario do beyond deploying, and the skip of a scenario that needs more.

Each capability is a class attribute of the target (`suite/targets/protocol.py`): the gate's own
stacks (`local`, `docker`) have them all; a running cluster (`k8s`) has none of them. A scenario
says what it needs with `@pytest.mark.needs(...)` or through a fixture that needs it
(`FIXTURE_NEEDS`); the plugin skips it at setup, before any fixture has changed anything, with
the message of `unsupported()` (expected / seen / what to do), as `guard.py` refuses destructive
scenarios on protected environments. Only a missing capability skips: on a target that has it
the scenario runs and gives its verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Union

if TYPE_CHECKING:
    from suite.targets.protocol import Target

SERVER_CONTROL = "server_control"
EXTRA_ENVIRONMENT = "extra_environment"
REGISTRY_FILES = "registry_files"
BASELINE = "baseline"


@dataclass(frozen=True)
class Capability:
    name: str  # what scenarios and faults name: @pytest.mark.needs("server_control")
    attribute: str  # the target's class attribute saying whether it has it
    needs: str  # what a scenario needing it does, for the skip message
    lacking: str  # why a target without it cannot give it


CAPABILITIES: Dict[str, Capability] = {
    c.name: c
    for c in [
        Capability(
            SERVER_CONTROL,
            "controls_servers",
            "control of the environment's Triton, to kill, stop or restart it (a crash or a pod restart, "
            "done by the gate)",
            "its Triton servers are not ones the gate started (a cluster's pods, which only the cluster restarts)",
        ),
        Capability(
            EXTRA_ENVIRONMENT,
            "starts_environments",
            "one more Triton, started by the gate on a repository of the scenario's (fixture make_environment)",
            "the gate starts no server",
        ),
        Capability(
            REGISTRY_FILES,
            "registry_files",
            "the registry's stored model files on the gate's disk (MLflow's artifact store), to damage one",
            "the registry is reached through its URL only, its artifact store is not on the gate's disk",
        ),
        Capability(
            BASELINE,
            "deploys",
            "the gate's own verified baseline of every environment, restored before each example "
            "(fixture gate_baseline)",
            "the platform is the user's: the gate keeps no baseline of it and never resets it",
        ),
    ]
}

# Fixtures that need a capability: a scenario using one (directly or through another fixture)
# needs it whatever its markers say.
FIXTURE_NEEDS: Dict[str, str] = {"make_environment": EXTRA_ENVIRONMENT, "gate_baseline": BASELINE}


def has(target: Union["Target", type], capability: str) -> bool:
    """Whether the target has it; a target that does not say is taken as able (as before these were declared)."""
    return bool(getattr(target, CAPABILITIES[capability].attribute, True))


def unknown(needs: Iterable[str]) -> List[str]:
    return [n for n in needs if n not in CAPABILITIES]


def scenario_needs(marked: Iterable[str], fixtures: Iterable[str] = ()) -> List[str]:
    """What a scenario needs: its `needs` markers, then the capabilities of the fixtures it uses."""
    used = [FIXTURE_NEEDS[f] for f in fixtures if f in FIXTURE_NEEDS]
    return list(dict.fromkeys([*marked, *used]))


def able_targets(needs: Sequence[str]) -> List[str]:
    """The `--target` values whose targets have every one of `needs`."""
    from suite.targets import TARGETS, target_class

    return [name for name in TARGETS if all(has(target_class(name), n) for n in needs)]


def unsupported(target: "Target", needs: Sequence[str]) -> Optional[str]:
    """The skip message for a scenario needing `needs` on `target`, or None when it has them all."""
    bad = unknown(needs)
    if bad:
        raise ValueError(f"unknown capabilities {bad}; expected some of {sorted(CAPABILITIES)}")
    lacking = [CAPABILITIES[n] for n in needs if not has(target, n)]
    if not lacking:
        return None
    able = able_targets([c.name for c in lacking])
    instead = " or ".join(f"--target {name}" for name in able) or "a target that has them"
    return (
        f"--target {target.name} cannot give this scenario what it needs; skipped before it changed "
        f"anything. Expected: {'; and '.join(c.needs for c in lacking)}. "
        f"Seen: on --target {target.name} {'; and '.join(c.lacking for c in lacking)}. "
        f"To run it: {instead}."
    )
