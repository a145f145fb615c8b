"""Same verdicts? `python -m reports.compare A/summary.json B/summary.json` compares two gate runs
(e.g. --target local and --target docker) scenario by scenario, over the scenarios both ran.

Exit status 0 when every common scenario has the same outcome, 1 otherwise (each difference
printed), 2 when the runs share no scenario. Skips whose reason names the target (cluster checks
on a non-k8s target) are outcomes like any other: they must match too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


def outcomes(summary: Path, prefix: str = "scenarios/") -> Dict[str, str]:
    data = json.loads(Path(summary).read_text())
    return {s["nodeid"]: s["outcome"] for s in data["scenarios"] if s["nodeid"].startswith(prefix)}


def differences(a: Dict[str, str], b: Dict[str, str]) -> Tuple[List[str], int]:
    common = sorted(set(a) & set(b))
    return [f"{nodeid}: {a[nodeid]} vs {b[nodeid]}" for nodeid in common if a[nodeid] != b[nodeid]], len(common)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.compare", description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="summary.json of one run")
    parser.add_argument("second", type=Path, help="summary.json of the other")
    args = parser.parse_args(argv)
    a, b = outcomes(args.first), outcomes(args.second)
    different, common = differences(a, b)
    if common == 0:
        print(f"no scenario in common between {args.first} ({len(a)}) and {args.second} ({len(b)})")
        return 2
    for line in different:
        print(line)
    print(
        f"{common} scenarios in both runs, {len(different)} with another outcome "
        f"({len(set(a) - set(b))} only in the first, {len(set(b) - set(a))} only in the second)"
    )
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
