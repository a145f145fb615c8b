"""What the nightly pipelines and the CronJob pass the gate: real options, marker sets, cron schedules."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import FrozenSet, Iterable, List, Optional, Set

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER_WORDS = frozenset({"and", "or", "not"})


# -- options -------------------------------------------------------------------------------------


def options_in_help(text: str) -> FrozenSet[str]:
    """Option names in an argparse/pytest --help text: the first column of lines starting with '-'."""
    found: Set[str] = set()
    for line in text.splitlines():
        if not re.match(r"^ {2,4}-", line):
            continue
        column = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        found.update(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", column))
    return frozenset(found)


@functools.lru_cache(maxsize=None)
def gate_help(repo_root: Path = REPO_ROOT) -> str:
    """`pytest scenarios --help`: pytest's own options and every option the gate's plugin adds."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios", "--help"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"`pytest scenarios --help` failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return proc.stdout


def gate_options(repo_root: Path = REPO_ROOT) -> FrozenSet[str]:
    return options_in_help(gate_help(repo_root))


@functools.lru_cache(maxsize=None)
def suite_command_options(command: str, repo_root: Path = REPO_ROOT) -> Optional[FrozenSet[str]]:
    """Options of `python -m suite COMMAND`, or None when the command does not exist (yet)."""
    proc = subprocess.run(
        [sys.executable, "-m", "suite", command, "--help"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return options_in_help(proc.stdout) if proc.returncode == 0 else None


def _squashed(option: str) -> str:
    # pytest's help shows `--junit-xml` and hides its alias `--junitxml`: it drops a long option
    # that equals a longer one without its dashes. Compare the way it dropped them.
    return option.replace("-", "") if option.startswith("--") else option


def unknown_options(args: Iterable[str], known: Iterable[str]) -> List[str]:
    """The option names in `args` (`--name` or `--name=value`) that `known` does not list."""
    known = set(known)
    squashed = {_squashed(o) for o in known}
    out = []
    for arg in args:
        if not re.match(r"^--?[A-Za-z]", arg):
            continue  # a value, or a positional such as `scenarios`
        name = arg.split("=", 1)[0]
        if name not in known and _squashed(name) not in squashed and name not in out:
            out.append(name)
    return out


def option_value(args: List[str], name: str) -> Optional[str]:
    """The value of `name` in `args` (`--name value` or `--name=value`; the last one wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(f"{name}="):
            value = arg.split("=", 1)[1]
    return value


def markers_in(expression: str) -> FrozenSet[str]:
    """The marker names of a `-m` expression (`smoke or deploy` -> {smoke, deploy})."""
    return frozenset(w for w in re.findall(r"[A-Za-z_][\w-]*", expression) if w not in MARKER_WORDS)


# -- cron ----------------------------------------------------------------------------------------

# Five fields, as Kubernetes CronJobs and GitHub's `schedule` read them: (name, low, high, names).
CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day of week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
CRON_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


def cron_problems(schedule: object) -> List[str]:
    """Why `schedule` is not a valid five-field cron expression (or macro); [] when it is."""
    if not isinstance(schedule, str) or not schedule.strip():
        return [f"schedule {schedule!r} is not a cron expression"]
    if schedule.strip() in CRON_MACROS:
        return []
    fields = schedule.split()
    if len(fields) != len(CRON_FIELDS):
        return [f"schedule {schedule!r} has {len(fields)} fields; cron has 5 (minute hour day month weekday)"]
    problems = []
    for text, (name, low, high, names) in zip(fields, CRON_FIELDS):
        if not all(_cron_item_ok(item, low, high, names) for item in text.split(",")):
            problems.append(f"schedule {schedule!r}: {name} field {text!r} is not within {low}-{high}")
    return problems


def _cron_item_ok(item: str, low: int, high: int, names: tuple) -> bool:
    span, _, step = item.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
        return False
    if span in ("*", "?"):
        return True
    start, _, end = span.partition("-")
    values = [_cron_value(v, names) for v in ([start, end] if end else [start])]
    return all(v is not None and low <= v <= high for v in values) and values == sorted(values)


def _cron_value(text: str, names: tuple) -> Optional[int]:
    if text.isdigit():
        return int(text)
    if text.upper() in names:
        return names.index(text.upper()) + (1 if len(names) == 12 else 0)
    return None
