"""The zoo's deployers, their real defects, and the verdict the gate must give on each scenario."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

from suite.platform import REFERENCE_DIR
from tools.defects import GateRun, Selection

HERE = Path(__file__).resolve().parent
SELECTION = Selection(marker="deploy or chaos")

# Scenarios every platform command skips, with the reason the gate gives.
STAGE_SWEEP = [
    "before:register",
    "after:register",
    "after:materialize",
    "after:load",
    "after:ready",
    "after:smoke",
    "mid:commit",
    "after:commit",
    "after:rollback:restore",
    "after:rollback:quarantine",
    "after:rollback:reload",
]
COMMAND_SKIPS = {
    f"test_concurrency_and_crashes.py::test_deployer_killed_at_a_stage_boundary_recovers[{p}-recover]": "skip"
    for p in STAGE_SWEEP
}
COMMAND_SKIPS.update(
    {
        f"test_concurrency_and_crashes.py::test_deployer_killed_at_a_stage_boundary_recovers[{p}-deploy-again]": "skip"
        for p in ("after:materialize", "mid:commit", "after:commit", "after:rollback:restore")
    }
)
COMMAND_SKIPS["test_concurrency_and_crashes.py::test_two_deploys_at_once_short_lock_refuses_one"] = "skip"

FAULT = "test_chaos.py::test_fault_ends_in_the_committed_state[{}]"
CRASH = "test_concurrency_and_crashes.py::test_deployer_killed_at_an_observed_point_recovers[{}]"
FULL = "test_chaos.py::test_full_repository_ends_in_the_committed_state"
TWO = "test_concurrency_and_crashes.py::test_two_deploys_at_once_both_succeed_in_turn"
UNDO = "test_concurrency_and_crashes.py::test_failed_deploy_never_undoes_a_concurrent_commit"
GOOD = "test_concurrency_and_crashes.py::test_successful_deploy_under_traffic_loses_no_request"
ALIAS = "test_deploy_contract.py::test_alias_moved_during_a_deploy_records_what_is_served"
EXISTING = "test_deploy_contract.py::test_existing_version_folder_with_other_content_is_refused"
OLDER = "test_deploy_contract.py::test_older_version_redeployed_is_served_also_after_a_restart"
PATH = "test_deploy_path.py::test_deploy_by_version_then_by_alias[{}]"
ISOLATION = "test_isolation.py::test_deploy_leaves_other_environment_untouched[{}]"
SEQUENCES = "test_sequences.py::test_random_sequences_keep_the_invariants"


@dataclass(frozen=True)
class ZooDeployer:
    name: str
    script: str
    defects: Tuple[str, ...]  # what is really wrong with it, in words; empty: a correct deployer
    # scenario -> "fail: <violated invariants and checks>" or "skip": the gate's expected verdict,
    # each failure with the defect it exposes; every scenario not named must pass.
    verdicts: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    recover: Optional[str] = None  # arguments of the script that make it the recover command
    quarantine: Optional[str] = None  # the layout its manifest declares
    pass_env: Tuple[str, ...] = ()

    @property
    def correct(self) -> bool:
        return not self.defects

    def command(self, *arguments: str) -> str:
        runner = "bash" if self.script.endswith(".sh") else "python"
        return " ".join([runner, str(HERE / self.script), *arguments])

    def expected(self, scenario: str) -> str:
        if scenario in self.verdicts:
            return self.verdicts[scenario][0]
        return COMMAND_SKIPS.get(scenario, "pass")

    def write_platform(self, folder: Path) -> Path:
        """A copy of the reference platform whose manifest names this deployer; returns the manifest."""
        shutil.copytree(REFERENCE_DIR, folder, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
        manifest = folder / "platform.yaml"
        spec = yaml.safe_load(manifest.read_text())
        deployer: dict = {"command": self.command()}
        if self.recover:
            deployer["recover"] = self.command(self.recover)
        if self.quarantine:
            deployer["quarantine"] = self.quarantine
        if self.pass_env:
            deployer["pass_env"] = list(self.pass_env)
        spec["deployer"] = deployer
        manifest.write_text(yaml.safe_dump(spec, sort_keys=False))
        return manifest


def verdicts_of(summary_path: Path) -> Dict[str, str]:
    """Each scenario's verdict in a gate run's summary.json: pass, skip, error, or fail with its findings."""
    summary = json.loads(Path(summary_path).read_text())
    verdicts = {}
    for scenario in summary["scenarios"]:
        node = scenario["nodeid"].split("scenarios/", 1)[-1]
        outcome = scenario["outcome"]
        if outcome == "passed":
            verdicts[node] = "pass"
        elif outcome == "skipped":
            verdicts[node] = "skip"
        elif outcome == "failed":
            verdicts[node] = " ".join(["fail:", *scenario["findings"]]) if scenario["findings"] else "fail"
        else:
            verdicts[node] = outcome
    return verdicts


MLFLOW_CLIENT_SETTINGS = ("MLFLOW_HTTP_REQUEST_*",)  # retries and timeouts of the mlflow client

ZOO = [
    ZooDeployer(
        "seed-dag",
        "seed_dag.sh",
        defects=(
            "loads the new version into the live model before checking it (users get its answers)",
            "its smoke check accepts any HTTP 200",
            "config.pbtxt has no version_policy, and failed versions stay beside the others as N.failed_<UTC>",
            "downloads straight into the version folder",
            "writes current.json in place",
            "no lock",
        ),
        pass_env=MLFLOW_CLIENT_SETTINGS,
        verdicts={
            **{
                FAULT.format(f): (
                    "fail: 2 3",
                    "loaded in place it fails; N.failed_<UTC> beside the versions without a "
                    "version_policy is read as version N, so the reload fails too "
                    "(NoSuchFile) and Triton stays not ready",
                )
                for f in ("corrupt-model", "config-wrong-input-name", "config-wrong-dims", "config-wrong-dtype")
            },
            FAULT.format("wrong-answers"): (
                "fail: 1 2 3 6 traffic",
                "loaded in place, users get wrong labels; the HTTP-200 smoke commits them",
            ),
            FAULT.format("slow-model"): (
                "fail: 1 2 3 6 traffic",
                "loaded in place, users wait 6 s; the HTTP-200 smoke waits too and commits it",
            ),
            **{
                FAULT.format(f): (
                    "fail: 2 3",
                    "after the restart Triton reads N.failed_<UTC> as version N and cannot load the model at all",
                )
                for f in ("triton-killed-during-load", "triton-killed-during-smoke")
            },
            FAULT.format("download-cut-halfway"): ("fail: 3", "the cut download leaves half a version folder N"),
            FULL: ("fail: 3", "the full disk leaves half a version folder N"),
            **{
                CRASH.format(p): ("fail: 1", "the next deploy heals it but writes current.json in place")
                for p in ("first-write", "load-requested", "current-changed")
            },
            CRASH.format("config-changed"): ("skip", "it writes config.pbtxt only on a first deploy"),
            GOOD: ("fail: 1", "current.json written in place"),
            PATH.format("dev"): ("fail: 1", "current.json written in place"),
            PATH.format("prod"): ("fail: 1", "current.json written in place"),
            ISOLATION.format("dev-prod"): ("fail: 1", "current.json written in place"),
            ISOLATION.format("prod-dev"): ("fail: 1", "current.json written in place"),
            ALIAS: ("fail: 1", "current.json written in place (it resolves the alias once: that part holds)"),
            TWO: (
                "fail: 1 2",
                "no lock: the first deploy records its version last while Triton serves the second's, "
                "the highest folder",
            ),
            UNDO: ("fail: 1 2 3 6", "no lock, HTTP-200 smoke: the bad version is committed over the good one"),
            EXISTING: ("fail: 1 2 3 6", "downloads over the existing folder N and deploys it"),
            OLDER: ("fail: 1 2", "no version_policy: Triton serves folder 2"),
            SEQUENCES: ("fail: 1 2 3 6 traffic", "the first faulty deploy (wrong answers) is committed"),
        },
    ),
    ZooDeployer(
        "quarantine-outside",
        "quarantine_outside.py",
        defects=(
            "config.pbtxt has no version_policy: Triton serves the highest version folder",
            "a failed canary load leaves Triton not ready",
            "a request failing mid-deploy ends it without rollback: canary and staging stay, nothing quarantined",
        ),
        quarantine="_quarantine/failed_v{version}_{utc}",
        verdicts={
            **{
                FAULT.format(f): ("fail: 2", "the canary's failed load keeps /v2/health/ready at 400 (Triton #7014)")
                for f in ("corrupt-model", "config-wrong-input-name", "config-wrong-dims", "config-wrong-dtype")
            },
            FAULT.format("triton-killed-during-load"): (
                "fail: 2 3 4",
                "the live load fails, the deploy stops: v N stays a version folder, the canary "
                "folder stays, and the restarted Triton serves the highest folder, N",
            ),
            FAULT.format("triton-killed-during-smoke"): (
                "fail: 3 4",
                "the canary's smoke fails, the unload fails too, the deploy stops: staging and "
                "canary folders stay, N is not quarantined",
            ),
            PATH.format("dev"): ("fail: 2", "the alias (v1) after v2: Triton serves folder 2"),
            PATH.format("prod"): ("fail: 2", "the alias (v1) after v2: Triton serves folder 2"),
            OLDER: ("fail: 2", "v1 after v2: Triton serves folder 2"),
            SEQUENCES: ("fail: 2", "deploy v2 then v1: Triton serves folder 2"),
            CRASH.format("config-changed"): ("skip", "it writes config.pbtxt only on a first deploy"),
        },
    ),
    ZooDeployer(
        "late-alias",
        "late_alias.py",
        defects=("resolves the alias again when it records the deploy",),
        pass_env=MLFLOW_CLIENT_SETTINGS,
        verdicts={
            ALIAS: ("fail: 2", "current.json names the alias's new version; Triton serves the one downloaded"),
        },
    ),
    ZooDeployer(
        "no-lock",
        "no_lock.py",
        defects=("no per-environment lock; a failure puts back the snapshot taken when it started",),
        verdicts={
            TWO: (
                "fail: 1 2 6",
                "the second deploy replaces the shared candidate; the first then fails and "
                "puts back its snapshot, undoing the second",
            ),
            UNDO: ("fail: 1 2", "the failed deploy puts back the snapshot it took before the good one committed"),
        },
    ),
    ZooDeployer("preflight", "preflight.py", defects=(), recover="--recover"),
    ZooDeployer("careful-shell", "careful.sh", defects=(), quarantine="attic/v{version}-{utc}"),
]


# -- running the zoo ---------------------------------------------------------------------------


@dataclass
class ZooRun:
    deployer: ZooDeployer
    verdicts: Dict[str, str]  # scenario -> what the gate said
    gate: GateRun

    def mismatches(self) -> Dict[str, Tuple[str, str]]:
        """Scenario -> (expected, seen), for every scenario whose verdict is not the expected one."""
        return {
            node: (self.deployer.expected(node), seen)
            for node, seen in sorted(self.verdicts.items())
            if seen != self.deployer.expected(node)
        }

    def confusion(self) -> Dict[str, int]:
        """Against the deployer's real defects: true/false positives and negatives (skips aside)."""
        counts = {"TP": 0, "FP": 0, "FN": 0, "TN": 0}
        for node, seen in self.verdicts.items():
            truth = self.deployer.expected(node)
            if "skip" in (truth, seen):
                continue
            defect, flagged = truth != "pass", seen != "pass"
            counts[("T" if defect == flagged else "F") + ("P" if flagged else "N")] += 1
        return counts


def run_deployer(deployer: ZooDeployer, workdir: Path, selection: Selection = SELECTION, workers: int = 0) -> ZooRun:
    from tools.defects import run_gate

    workdir.mkdir(parents=True, exist_ok=True)
    manifest = deployer.write_platform(workdir / "platform")
    gate = run_gate(manifest, selection, workdir / "run", workers=workers)
    summary = workdir / "run" / "reports" / "latest" / "summary.json"
    verdicts = verdicts_of(summary) if summary.is_file() else {}
    return ZooRun(deployer, verdicts, gate)


def run_zoo(deployers, workdir: Path, jobs: int = 2, workers: int = 0) -> Dict[str, Future]:
    """Start a gate run per deployer, `jobs` at a time, each in `workers` xdist workers (0: one
    process); name -> future ZooRun."""

    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="zoo")
    futures = {d.name: pool.submit(run_deployer, d, Path(workdir) / d.name, SELECTION, workers) for d in deployers}
    pool.shutdown(wait=False)
    return futures


def collect(selection: Selection = SELECTION) -> List[str]:
    """The node ids (relative to scenarios/) a selection runs, as pytest collects them."""
    from tools.defects import ROOT, SCENARIOS

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *selection.args()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    prefix = f"{SCENARIOS.relative_to(ROOT)}/"
    return [line[len(prefix) :] for line in proc.stdout.splitlines() if line.startswith(prefix) and "::" in line]


def run_alone(deployer: ZooDeployer, workdir: Path, jobs: int = 1) -> Dict[str, Tuple[str, str]]:
    """Every scenario of the selection in a gate session of its own; scenario -> (expected, seen)
    for each whose verdict alone is not the one of its table (the verdict in the full session)."""
    nodes = collect()
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="alone") as pool:
        runs = {
            node: pool.submit(run_deployer, deployer, Path(workdir) / f"{i:03d}", Selection(nodes=(node,)))
            for i, node in enumerate(nodes)
        }
    seen = {node: run.result().verdicts.get(node, "did not run") for node, run in runs.items()}
    return {
        node: (deployer.expected(node), verdict) for node, verdict in seen.items() if verdict != deployer.expected(node)
    }


def report(runs: Dict[str, ZooRun]) -> str:
    """The confusion matrix per deployer (markdown), then every mismatch."""
    lines = [
        "| deployer | real defects | TP | FP | FN | TN | skipped | gate run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    mismatches = []
    for name, run in runs.items():
        counts = run.confusion()
        skipped = sum(1 for v in run.verdicts.values() if v == "skip")
        lines.append(
            f"| {name} | {len(run.deployer.defects) or 'none (correct)'} | {counts['TP']} | {counts['FP']} | "
            f"{counts['FN']} | {counts['TN']} | {skipped} | {run.gate.duration_s:.0f} s |"
        )
        mismatches += [
            f"{name}: {node}: expected {want}, the gate said {seen}" for node, (want, seen) in run.mismatches().items()
        ]
    return "\n".join(lines + [""] + (mismatches or ["every verdict as expected"]))


def main(argv=None) -> int:
    """`python -m tests.deployers.zoo [--runs N] [--only NAME ...] [--workers N]`: run the zoo, print the matrix."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m tests.deployers.zoo", description=main.__doc__)
    parser.add_argument("--runs", type=int, default=1, help="run the whole zoo this many times (compared)")
    parser.add_argument("--only", nargs="*", default=[], help="deployer names")
    parser.add_argument("--jobs", type=int, default=2, help="gate runs at a time (default 2)")
    parser.add_argument("--workers", type=int, default=0, help="xdist workers per gate run (default 0: one process)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--alone",
        action="store_true",
        help="instead: run every scenario alone, each in its own gate session, against the table",
    )
    args = parser.parse_args(argv)
    chosen = [d for d in ZOO if not args.only or d.name in args.only]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="gate-zoo-"))
    if args.alone:
        bad = {}
        for deployer in chosen:
            begin = time.perf_counter()
            bad[deployer.name] = run_alone(deployer, root / deployer.name, args.jobs)
            print(
                f"{deployer.name}: {len(collect())} scenarios alone, {len(bad[deployer.name])} with another "
                f"verdict than in the session, {time.perf_counter() - begin:.0f} s",
                flush=True,
            )
            for node, (want, seen) in bad[deployer.name].items():
                print(f"  {node}: in the session {want!r}, alone {seen!r}")
        print(f"runs kept in {root}")
        return 1 if any(bad.values()) else 0
    rounds = []
    for number in range(1, args.runs + 1):
        futures = run_zoo(chosen, root / f"run-{number}", args.jobs, args.workers)
        runs = {name: future.result() for name, future in futures.items()}
        rounds.append(runs)
        print(f"## run {number}\n\n{report(runs)}\n", flush=True)
    ok = all(not run.mismatches() for runs in rounds for run in runs.values())
    if len(rounds) > 1:
        same = all(rounds[0][n].verdicts == r[n].verdicts for r in rounds[1:] for n in rounds[0])
        print(f"verdicts identical in all {len(rounds)} runs: {same}")
        ok = ok and same
    print(f"runs kept in {root}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
