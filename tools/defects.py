"""Seeded defects: the gate run against broken copies of a platform, and its detection score.

    python -m tools.defects [--only ID ...] [--jobs 2] [--workdir DIR] [--catalogue tests.defects]

A developer tool of the checkout (not in the wheel): the catalogue lives in tests/defects/ and the
gate runs from the checkout, so pyproject's pytest settings apply as in `make gate`.
Exit status: 0 every defect caught and the reference passes, 1 otherwise, 2 bad input.
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
GATE_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Selection:
    """The scenarios one gate run selects: `-m`, `-k`, or node ids run in the order given."""

    keyword: Optional[str] = None
    marker: Optional[str] = None
    nodes: Tuple[str, ...] = ()  # relative to scenarios/, e.g. "test_smoke.py::test_x[dev]"

    def args(self) -> List[str]:
        args = [str(SCENARIOS / node) for node in self.nodes] or [str(SCENARIOS)]
        if self.marker:
            args += ["-m", self.marker]
        if self.keyword:
            args += ["-k", self.keyword]
        return args

    def __str__(self) -> str:
        parts = [" ".join(self.nodes)] if self.nodes else []
        parts += [f"-m '{self.marker}'"] if self.marker else []
        parts += [f"-k '{self.keyword}'"] if self.keyword else []
        return " ".join(parts)


@dataclass(frozen=True)
class Defect:
    """One realistic platform defect: a named change to a copy of the platform folder."""

    id: str
    description: str
    mutate: Callable[[Path], None]  # changes the copied platform folder in place
    selection: Selection
    expected: Tuple[str, ...]  # scenario node ids (as in Selection.nodes) that must fail
    messages: Tuple[str, ...] = ()  # fnmatch patterns the expected failures' text must contain
    known_gap: str = ""  # why the gate cannot catch it yet (reported as missed, never hidden)
    # The reference run that covers `selection` (a superset several defects share, so the
    # unbroken platform runs once per group); default: `selection` itself.
    reference: Optional[Selection] = None

    @property
    def reference_selection(self) -> Selection:
        return self.reference or self.selection


@dataclass
class GateRun:
    """One `pytest scenarios` run: exit status, time, and each scenario's outcome and text."""

    platform: Path
    selection: Selection
    returncode: int
    duration_s: float
    outcomes: Dict[str, str] = field(default_factory=dict)  # node id -> passed|failed|error|skipped
    texts: Dict[str, str] = field(default_factory=dict)  # node id -> failure or error text
    output: str = ""

    def with_outcome(self, outcome: str) -> List[str]:
        return sorted(n for n, o in self.outcomes.items() if o == outcome)

    @property
    def clean(self) -> bool:
        """Everything selected passed (or was skipped), and something ran."""
        return self.returncode == 0 and bool(self.with_outcome("passed"))

    def summary(self) -> str:
        counts = {o: len(self.with_outcome(o)) for o in ("passed", "failed", "error", "skipped")}
        return f"exit {self.returncode}, " + ", ".join(f"{n} {o}" for o, n in counts.items() if n)


@dataclass
class DefectResult:
    defect: Defect
    run: GateRun
    reference: GateRun
    caught: bool
    reason: str

    @property
    def reference_ok(self) -> bool:
        """The reference passed the expected scenarios and every other one the defect's run ran."""
        ran = set(self.run.outcomes) | set(self.defect.expected)
        return (
            self.reference.clean
            and all(self.reference.outcomes.get(n) == "passed" for n in self.defect.expected)
            and all(self.reference.outcomes.get(n) in ("passed", "skipped") for n in ran)
        )


def copy_platform(source: Path, destination: Path) -> Path:
    """A full copy of a platform folder; returns the copied manifest."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.py", "*.pyc"))
    return destination / "platform.yaml"


def run_gate(
    platform: Path, selection: Selection, workdir: Path, timeout: float = GATE_TIMEOUT_S, workers: int = 0
) -> GateRun:
    """Run the gate as a user does, in a subprocess, and read its JUnit report; `workers` > 0 runs
    it in that many pytest-xdist workers, as `make gate` does."""
    workdir.mkdir(parents=True, exist_ok=True)
    junit = workdir / "junit.xml"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        *selection.args(),
        "--platform",
        str(platform),
        "--junitxml",
        str(junit),
        "--report-dir",
        str(workdir / "reports"),
        "--basetemp",
        str(workdir / "tmp"),
        "-q",
        "-rfE",
        *(["-n", str(workers)] if workers else []),
    ]
    begin = time.perf_counter()
    try:
        # cwd = the checkout, so pyproject's pytest settings (strict markers) apply as in `make gate`
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        returncode, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        # pytest is SIGKILLed; the gate's watchdog then stops the servers it started
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        returncode, output = -1, f"gate run timed out after {timeout:.0f} s\n{partial}"
    run = GateRun(platform, selection, returncode, time.perf_counter() - begin, output=output)
    (workdir / "output.txt").write_text(output)
    if junit.is_file():
        run.outcomes, run.texts = read_junit(junit)
    return run


def read_junit(path: Path) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Each testcase of a JUnit report as `file.py::name` -> outcome, and its failure text."""
    outcomes: Dict[str, str] = {}
    texts: Dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = (case.get("classname") or "").split(".")
        node = f"{module[-1]}.py::{case.get('name')}" if module and module[-1] else str(case.get("name"))
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = "failed" if tag == "failure" else tag
                texts[node] = f"{child.get('message') or ''}\n{child.text or ''}"
                break
        # a test failing in its call and erroring in teardown has both: the failure counts
        if outcomes.get(node) == "failed":
            continue
        outcomes[node] = outcome
    return outcomes, texts


def judge(defect: Defect, run: GateRun) -> Tuple[bool, str]:
    """Caught: the gate failed, in every scenario the defect names, with the expected words."""
    if run.returncode != 1:
        return False, f"the gate did not fail with test failures ({run.summary()})"
    missing = [n for n in defect.expected if run.outcomes.get(n) != "failed"]
    if missing:
        seen = {n: run.outcomes.get(n, "not run") for n in missing}
        return False, f"expected failures not seen: {seen}; failed instead: {run.with_outcome('failed')}"
    text = "\n".join(run.texts.get(n, "") for n in defect.expected)
    unmatched = [p for p in defect.messages if not fnmatch.fnmatch(text, f"*{p}*")]
    if unmatched:
        return False, f"failed, but without naming the defect: no {unmatched} in the failure text"
    others = [n for n in run.with_outcome("failed") if n not in defect.expected]
    return True, "caught" + (f" (also failed: {', '.join(others)})" if others else "")


class DefectRunner:
    """Runs defects and the unbroken reference (once per selection), `jobs` gate runs at a time."""

    def __init__(self, catalogue: Sequence[Defect], source: Path, workdir: Path, jobs: int = 1):
        self.catalogue = {d.id: d for d in catalogue}
        self.source = Path(source)
        self.workdir = Path(workdir)
        self.pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="gate-run")
        self._references: Dict[Selection, Future] = {}
        self._runs: Dict[str, Future] = {}
        self._lock = threading.Lock()
        self._reference_manifest: Optional[Path] = None

    def _reference(self, selection: Selection) -> Future:
        with self._lock:
            if self._reference_manifest is None:
                self._reference_manifest = copy_platform(self.source, self.workdir / "reference" / "platform")
            if selection not in self._references:
                where = self.workdir / "reference" / f"run-{len(self._references)}"
                self._references[selection] = self.pool.submit(run_gate, self._reference_manifest, selection, where)
            return self._references[selection]

    def _defect(self, defect_id: str) -> Future:
        with self._lock:
            if defect_id not in self._runs:
                defect = self.catalogue[defect_id]
                manifest = copy_platform(self.source, self.workdir / defect.id / "platform")
                defect.mutate(manifest.parent)
                self._runs[defect_id] = self.pool.submit(
                    run_gate, manifest, defect.selection, self.workdir / defect.id / "run"
                )
            return self._runs[defect_id]

    def start(self, defect_ids: Iterable[str]) -> "DefectRunner":
        """Queue runs in this order (each defect after its selection's reference)."""
        for defect_id in defect_ids:
            self._reference(self.catalogue[defect_id].reference_selection)
            self._defect(defect_id)
        return self

    def result(self, defect_id: str) -> DefectResult:
        defect = self.catalogue[defect_id]
        try:
            reference = self._reference(defect.reference_selection).result()
            run = self._defect(defect_id).result()
        except KeyboardInterrupt:
            # Ctrl-C ends the running gate runs (same process group); without this the queued
            # ones would start one after another while pytest is still tearing down.
            self.pool.shutdown(wait=False, cancel_futures=True)
            raise
        caught, reason = judge(defect, run)
        return DefectResult(defect, run, reference, caught, reason)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def table(results: Sequence[DefectResult]) -> str:
    """The detection table: defect, expected scenario, caught or missed, time; then the score."""
    rows = [("defect", "expected scenario", "result", "time")]
    for r in results:
        verdict = "caught" if r.caught else "MISSED"
        rows.append((r.defect.id, ", ".join(r.defect.expected), verdict, f"{r.run.duration_s:.1f} s"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        if not r.caught:
            lines.append(
                f"missed {r.defect.id}: {r.reason}"
                + (f" [known gap: {r.defect.known_gap}]" if r.defect.known_gap else "")
            )
    references = {id(r.reference): r.reference for r in results}.values()
    for ref in references:
        verdict = "passes" if ref.clean else f"FAILS ({ref.summary()})"
        lines.append(f"reference {verdict}: {ref.selection} ({ref.duration_s:.1f} s)")
    broken = [r.defect.id for r in results if not r.reference_ok]
    if broken:
        lines.append(f"reference does not pass the expected scenarios of: {', '.join(broken)}")
    caught = sum(r.caught for r in results)
    lines.append(f"score: {caught}/{len(results)} defects caught")
    return "\n".join(lines)


def load_catalogue(module: str) -> List[Defect]:
    """The catalogue is `CATALOGUE` in a module; the project's lives in tests/defects/."""
    import importlib

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return list(importlib.import_module(module).CATALOGUE)


def run(catalogue_module: str, only: Sequence[str], jobs: int, workdir: Optional[str]) -> int:
    """Run the chosen defects; print the table; 1 if a defect is missed or the reference fails."""
    import tempfile

    catalogue = load_catalogue(catalogue_module)
    unknown = [d for d in only if d not in {c.id for c in catalogue}]
    if unknown:
        print(f"unknown defect ids {unknown}; the catalogue has: {', '.join(c.id for c in catalogue)}", file=sys.stderr)
        return 2
    chosen = [d for d in catalogue if not only or d.id in only]
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="gate-defects-"))
    from suite.platform import REFERENCE_DIR

    runner = DefectRunner(chosen, REFERENCE_DIR, root, jobs).start(d.id for d in chosen)
    begin = time.perf_counter()
    results = []
    try:
        for defect in chosen:
            result = runner.result(defect.id)
            results.append(result)
            print(f"{defect.id}: {'caught' if result.caught else 'MISSED'} ({result.run.duration_s:.1f} s)", flush=True)
    finally:
        runner.close()
    print()
    print(table(results))
    print(f"wall time {time.perf_counter() - begin:.0f} s with {jobs} parallel gate runs; runs kept in {root}")
    ok = all(r.caught for r in results) and all(r.reference_ok for r in results)
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.defects", description="run the gate against each seeded defect; print the score"
    )
    parser.add_argument("--catalogue", default="tests.defects", help="module with CATALOGUE (default: tests.defects)")
    parser.add_argument("--only", nargs="*", default=[], metavar="ID", help="run only these defect ids")
    parser.add_argument("--jobs", type=int, default=2, help="gate runs at a time (default 2)")
    parser.add_argument("--workdir", help="keep the broken copies and gate outputs here (default: a temp folder)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    return run(args.catalogue, args.only, args.jobs, args.workdir)


if __name__ == "__main__":
    sys.exit(main())
