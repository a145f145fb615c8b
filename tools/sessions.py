"""Several gate sessions at once on one machine, as CI runners and nightly schedulers start them.

    python -m tools.sessions [--sessions 3] [--kill 1] [--interrupt 1] [--trials 3] [-- PYTEST ARGS]

Each trial runs the selection alone first (its verdicts are the reference), then `--sessions` at
once, each with its own --basetemp and --report-dir under one scratch folder. Half-way through (half
the solo run's time) the first `--kill` sessions are SIGKILLed and the next `--interrupt` get a
Ctrl-C (SIGINT to their process group, as a terminal sends it); the rest run to the end.

A trial passes when every session that ran to the end has the solo run's outcome for each scenario,
and, once all are over, nothing of any session is left: no process (each session's process tree is
recorded while it runs, and every process the gate starts carries its session token), no mount,
and no new entry in /tmp or /run. The figures go to <scratch>/trials.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import psutil

from reports.compare import differences, outcomes
from suite.ownership import SESSION_VARIABLE

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SELECTION = ["scenarios"]
WATCHED_FOLDERS = (Path("/tmp"), Path("/run"))
# What a SIGKILLed Triton leaves in /tmp, under names it chooses itself: its Python backend's
# python_env_XXXXXX and the folderXXXXXX of a model loaded with files. A Triton stopped by the gate
# removes both; one killed on purpose (a chaos fault, or a killed session's Triton) cannot. They are
# counted apart: nothing can tell whose Triton made one, so the gate must not remove them.
TRITON_CRASH_LEFTOVERS = re.compile(r"^/tmp/(python_env_|folder)[A-Za-z0-9]{6}$")
SESSION_TIMEOUT_S = 3600
CLEANUP_S = 15.0  # a killed session's watchdog: SIGTERM, 2 s grace, SIGKILL, unmount
LEFTOVER_S = 30.0  # a new mount or /tmp entry still there this long after is left behind (_still_new)


@dataclass
class SessionResult:
    name: str
    role: str  # "runs", "killed" or "interrupted"
    exit_code: Optional[int] = None
    duration_s: float = 0.0
    scenarios: int = 0
    different: List[str] = field(default_factory=list)
    processes_seen: int = 0


@dataclass
class TrialResult:
    solo_s: float
    solo_scenarios: int
    together_s: float
    sessions: List[SessionResult]
    leftover_processes: List[str]
    leftover_mounts: List[str]
    leftover_temporary: List[str]
    triton_crash_leftovers: int

    @property
    def problems(self) -> List[str]:
        found = []
        for session in self.sessions:
            if session.role == "runs":
                if session.exit_code != 0:
                    found.append(f"{session.name} exited {session.exit_code} (see its output.log)")
                if not session.scenarios:
                    found.append(f"{session.name} reported no scenario")
                found += [f"{session.name}: {line} (alone vs together)" for line in session.different]
            elif session.role == "interrupted" and session.exit_code != pytest_interrupted():
                found.append(f"{session.name} exited {session.exit_code} after Ctrl-C, not pytest's 2")
        found += [f"process left: {p}" for p in self.leftover_processes]
        found += [f"mount left: {m}" for m in self.leftover_mounts]
        found += [f"temporary entry left: {t}" for t in self.leftover_temporary]
        return found


def pytest_interrupted() -> int:
    return 2  # pytest.ExitCode.INTERRUPTED, without importing pytest here


def _command(folder: Path, selection: Sequence[str]) -> List[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        *selection,
        "--basetemp",
        str(folder / "tmp"),
        "--report-dir",
        str(folder / "reports"),
        "-p",
        "no:cacheprovider",
        "-q",
    ]


def _default_sigint() -> None:
    # A scheduler that starts us in the background leaves SIGINT ignored; a terminal's job has it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Session:
    """One gate session as a separate `pytest` process, its process tree recorded while it runs."""

    def __init__(self, name: str, role: str, folder: Path, selection: Sequence[str]):
        self.result = SessionResult(name, role)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._output = open(folder / "output.log", "w")
        self._begin = time.perf_counter()
        self.proc = subprocess.Popen(
            _command(folder, selection),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own foreground-like group, for the Ctrl-C
            preexec_fn=_default_sigint,
        )
        self.seen: Set[Tuple[int, float]] = set()  # (pid, start time): a pid alone may be reused

    def record_tree(self) -> None:
        try:
            root = psutil.Process(self.proc.pid)
            for proc in [root, *root.children(recursive=True)]:
                self.seen.add((proc.pid, proc.create_time()))
        except psutil.NoSuchProcess:
            pass

    def finished(self) -> bool:
        if self.proc.poll() is None:
            return False
        if self.result.exit_code is None:
            self.result.exit_code = self.proc.returncode
            self.result.duration_s = round(time.perf_counter() - self._begin, 1)
            self._output.close()
        return True

    def interrupt(self) -> None:
        """Ctrl-C, then SIGKILL if it is still there after a while (the trial itself was stopped)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def summary(self) -> Optional[Path]:
        path = self.folder / "reports" / "latest" / "summary.json"
        return path if path.is_file() else None


def _mounts() -> Set[str]:
    return {line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()}


def _entries() -> Set[str]:
    return {str(folder / name) for folder in WATCHED_FOLDERS if folder.is_dir() for name in os.listdir(folder)}


def _still_new(*new_since_before: Callable[[], Set[str]]) -> List[Set[str]]:
    """What is new and stays new for LEFTOVER_S: other gates on the machine (other tests, under
    `make test`'s xdist) mount and stage their own faults meanwhile, each for one scenario; nobody
    removes what the sessions left. Triton's own crash leftovers are counted apart, not waited for."""
    first = [new() for new in new_since_before]
    current = first
    deadline = time.monotonic() + LEFTOVER_S
    while any(e for found in current for e in found if not TRITON_CRASH_LEFTOVERS.match(e)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
        current = [new() & was for new, was in zip(new_since_before, first)]
    return current


def _still_there(seen: Set[Tuple[int, float]]) -> List[str]:
    left = []
    for pid, started in seen:
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - started) < 0.005 and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return left


def _tagged_by(pids: Set[int]) -> List[str]:
    """Processes carrying the session token of one of `pids` (the gate processes of the trial)."""
    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            token = proc.environ().get(SESSION_VARIABLE, "")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if token and int(token.split("-", 1)[0]) in pids:
            left.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:120]}")
    return left


def run_alone(folder: Path, selection: Sequence[str]) -> Tuple[Dict[str, str], float]:
    session = Session("alone", "runs", folder, selection)
    try:
        session.proc.wait(timeout=SESSION_TIMEOUT_S)
    finally:
        session.interrupt()  # a no-op once it ended
    session.finished()
    summary = session.summary()
    if summary is None or session.result.exit_code != 0:
        raise SystemExit(
            f"the solo run failed (exit {session.result.exit_code}): see {folder / 'output.log'}; "
            f"the trial compares the sessions with a passing solo run"
        )
    return outcomes(summary), session.result.duration_s


def run_trial(
    scratch: Path, selection: Sequence[str], sessions: int = 3, kill: int = 1, interrupt: int = 1
) -> TrialResult:
    alone, solo_s = run_alone(scratch / "alone", selection)
    mounts_before, entries_before = _mounts(), _entries()
    roles = ["killed"] * kill + ["interrupted"] * interrupt
    roles += ["runs"] * (sessions - len(roles))
    begin = time.perf_counter()
    started = [
        Session(f"session-{i + 1}", role, scratch / f"session-{i + 1}", selection) for i, role in enumerate(roles)
    ]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for session in started:
                session.record_tree()
            stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    midway = begin + solo_s / 2
    acted = False
    deadline = begin + SESSION_TIMEOUT_S
    try:
        while not all(s.finished() for s in started):
            if not acted and time.perf_counter() >= midway:
                for session in started:
                    if session.result.role == "killed" and session.proc.poll() is None:
                        session.proc.kill()  # the gate's own process, as an OOM killer or `kill -9` does
                    elif session.result.role == "interrupted" and session.proc.poll() is None:
                        os.killpg(session.proc.pid, signal.SIGINT)  # Ctrl-C: the terminal's foreground group
                acted = True
            if time.perf_counter() > deadline:
                raise SystemExit(f"sessions still running after {SESSION_TIMEOUT_S} s: see {scratch}")
            time.sleep(0.2)
    finally:  # also when the trial itself is interrupted: no session outlives it
        for session in started:
            session.interrupt()
        stop.set()
        watcher.join()
    together_s = round(time.perf_counter() - begin, 1)

    seen = set().union(*(s.seen for s in started))
    gate_pids = {pid for pid, _ in seen}
    settle = time.monotonic() + CLEANUP_S  # a killed session's watchdog is still at work
    while time.monotonic() < settle and (_still_there(seen) or _tagged_by(gate_pids)):
        time.sleep(0.5)
    leftover_mounts, new_entries = _still_new(lambda: _mounts() - mounts_before, lambda: _entries() - entries_before)
    for session in started:
        session.result.processes_seen = len(session.seen)
        summary = session.summary()
        if session.result.role == "runs" and summary is not None:
            together = outcomes(summary)
            session.result.scenarios = len(together)
            session.result.different, _ = differences(alone, together)
            session.result.different += [f"{n}: missing" for n in sorted(set(alone) - set(together))]
    return TrialResult(
        solo_s=solo_s,
        solo_scenarios=len(alone),
        together_s=together_s,
        sessions=[s.result for s in started],
        leftover_processes=sorted(set(_still_there(seen)) | set(_tagged_by(gate_pids))),
        leftover_mounts=sorted(leftover_mounts),
        leftover_temporary=sorted(e for e in new_entries if not TRITON_CRASH_LEFTOVERS.match(e)),
        triton_crash_leftovers=sum(1 for e in new_entries if TRITON_CRASH_LEFTOVERS.match(e)),
    )


def _print(n: int, trial: TrialResult) -> None:
    print(
        f"trial {n}: alone {trial.solo_scenarios} scenarios in {trial.solo_s:.0f} s; "
        f"{len(trial.sessions)} at once in {trial.together_s:.0f} s"
    )
    for s in trial.sessions:
        print(
            f"  {s.name:<10} {s.role:<12} exit {s.exit_code!s:<4} {s.duration_s:>6.0f} s  "
            f"{s.scenarios:>3} scenarios  {len(s.different)} different  {s.processes_seen} processes seen"
        )
    print(f"  {trial.triton_crash_leftovers} /tmp folders of Tritons SIGKILLed on purpose (see TRITON_CRASH_LEFTOVERS)")
    print("  " + ("; ".join(trial.problems) if trial.problems else "nothing left, same verdicts: passed"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.sessions", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--kill", type=int, default=1, help="sessions SIGKILLed half-way")
    parser.add_argument("--interrupt", type=int, default=1, help="sessions interrupted (Ctrl-C) half-way")
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--scratch", type=Path, default=None, help="default: reports/out/sessions/<UTC>")
    parser.add_argument("selection", nargs="*", default=DEFAULT_SELECTION, help="pytest arguments after --")
    args = parser.parse_args(argv)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    scratch = (args.scratch or ROOT / "reports" / "out" / "sessions" / stamp).resolve()
    trials = []
    for n in range(1, args.trials + 1):
        trial = run_trial(scratch / f"trial-{n}", args.selection, args.sessions, args.kill, args.interrupt)
        _print(n, trial)
        trials.append(trial)
        (scratch / "trials.json").write_text(
            json.dumps([{**asdict(t), "problems": t.problems} for t in trials], indent=1) + "\n"
        )
    failed = sum(1 for t in trials if t.problems)
    print(f"{len(trials) - failed} of {len(trials)} trials passed; figures in {scratch / 'trials.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
