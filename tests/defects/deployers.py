"""Deploy-path defects: the builtin path with one seeded mistake, run as the platform's own deployer."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, List

from tools.defects import Defect, Selection

SCRIPT = Path(__file__).resolve().parent / "seeded_deployer.py"


def _deployer(defect: str, *options: str) -> Callable[[Path], None]:
    """Put the seeded deployer in the platform copy and name it as the platform's deploy command."""

    def mutate(platform: Path) -> None:
        script = platform / "deployer" / SCRIPT.name
        script.parent.mkdir()
        shutil.copy(SCRIPT, script)
        command = " ".join(["python", str(script), defect, *options])
        manifest = platform / "platform.yaml"
        manifest.write_text(manifest.read_text() + f"deployer: {{command: '{command}'}}\n")

    return mutate


def _fault(name: str) -> Selection:
    return Selection(marker="chaos", keyword=f"fault_ends and {name}")


def _chaos(*args, **kwargs) -> Defect:
    """A defect caught by a fault of the chaos catalogue (its reference: FAULTS_REFERENCE)."""
    return Defect(*args, **kwargs, reference=FAULTS_REFERENCE)


WRONG_ANSWERS = _fault("wrong-answers")
# The unbroken reference runs the three faults the defects use in one session.
FAULTS_REFERENCE = _fault("(wrong-answers or download-cut-halfway or slow-model)")
FAULT = "test_chaos.py::test_fault_ends_in_the_committed_state"
GOOD_DEPLOY = "test_concurrency_and_crashes.py::test_successful_deploy_under_traffic_loses_no_request"
# v2 deployed, then the older v1 while folder 2 stays.
OLDER = "test_deploy_contract.py::test_older_version_redeployed_is_served_also_after_a_restart"
OLDER_VERSION = Selection(nodes=(OLDER, GOOD_DEPLOY))
RACE_NODE = "test_concurrency_and_crashes.py::test_two_deploys_at_once_both_succeed_in_turn"
RACE = Selection(nodes=(RACE_NODE,))

DEFECTS: List[Defect] = [
    _chaos(
        "smoke-checks-only-http-200",
        "the smoke infer accepts any answer (the seed's gap): wrong labels go live",
        _deployer("http-200-smoke"),
        WRONG_ANSWERS,
        (f"{FAULT}[wrong-answers]",),
        ("invariant 1 (current.json and config.pbtxt unchanged)",),
    ),
    Defect(
        "no-version-policy",
        "config.pbtxt has no version_policy: Triton serves the highest folder, not the version current.json names",
        _deployer("no-version-policy", "--ready-timeout", "5"),
        OLDER_VERSION,
        (OLDER,),
        ("invariant 2 (committed version serves golden)",),
    ),
    _chaos(
        "rollback-only-on-load",
        "rollback runs for load/ready failures only: a version failing smoke (or commit) stays in place",
        _deployer("rollback-only-on-load"),
        WRONG_ANSWERS,
        (f"{FAULT}[wrong-answers]",),
        ("invariant 3 (failed version quarantined complete)",),
    ),
    _chaos(
        "deletes-failed-version",
        "a failed version is deleted instead of quarantined as N.failed_<UTC>",
        _deployer("delete-failed-version"),
        WRONG_ANSWERS,
        (f"{FAULT}[wrong-answers]",),
        ("invariant 3 (failed version quarantined complete)", "never deleted"),
    ),
    # A torn read is a matter of timing; the inode is not: a good deploy that changes current.json
    # but keeps its inode rewrote it in place.
    Defect(
        "current-json-not-atomic",
        "current.json is rewritten in place (truncate + write), not temp file + os.replace",
        _deployer("current-json-in-place"),
        Selection(nodes=(GOOD_DEPLOY,)),
        (GOOD_DEPLOY,),
        ("rewritten in place",),
        reference=OLDER_VERSION,
    ),
    _chaos(
        "materialize-not-atomic",
        "the model downloads straight into folder N: a cut download leaves a half version",
        _deployer("materialize-in-place"),
        _fault("download-cut-halfway"),
        (f"{FAULT}[download-cut-halfway]",),
        ("invariant 3",),
    ),
    Defect(
        "no-deploy-lock",
        "no per-environment lock: two deploys at once interleave",
        _deployer("no-lock"),
        RACE,
        (RACE_NODE,),
        ("lets both succeed in turn",),
    ),
    _chaos(
        "no-candidate",
        "the new version is loaded into the live model before its smoke check: users get its answers",
        _deployer("no-candidate"),
        WRONG_ANSWERS,
        (f"{FAULT}[wrong-answers]",),
        ("failed requests during a failed deploy",),
    ),
    _chaos(
        "exit-0-on-failure",
        "the deploy command exits 0 whatever happened: the pipeline never sees a failure",
        _deployer("exit-0-always"),
        WRONG_ANSWERS,
        (f"{FAULT}[wrong-answers]",),
        ("invariant 6 (failure reported with its reason)",),
    ),
    _chaos(
        "smoke-without-latency-bound",
        "the smoke infer waits 30 s: a 6 s-per-request model goes live",
        _deployer("smoke-timeout-30s"),
        _fault("slow-model"),
        (f"{FAULT}[slow-model]",),
        ("invariant 1 (current.json and config.pbtxt unchanged)",),
    ),
]
