"""Command line: `python -m suite deploy --env dev --model best_model --alias A`, `python -m suite recover --env dev`,
`python -m suite history` (the gate's last runs and their regressions).

Exit status: 0 deployed / recovered / history shown, 1 deploy failed (rolled back) or recovery
incomplete, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Callable, List, Optional

from suite.errors import GateError
from suite.quarantine import DEFAULT_LAYOUT, QuarantineLayout

# Chaos-testing hook: `GATE_CRASH_AT=after:materialize` makes the deployer SIGKILL itself at that
# stage boundary, so the crash-consistency sweep can prove `recover` handles every point.
CRASH_AT_VARIABLE = "GATE_CRASH_AT"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m suite", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    deploy = commands.add_parser("deploy", help="run the deploy path for one model into one environment")
    recover = commands.add_parser("recover", help="finish or undo a deploy that was interrupted")
    for sub in (deploy, recover):
        sub.add_argument("--env", required=True, help="environment name (dev, prod, ...)")
        sub.add_argument("--model", default=os.environ.get("GATE_MODEL"), help="registered model name (env GATE_MODEL)")
        sub.add_argument(
            "--mlflow-uri",
            default=os.environ.get("MLFLOW_TRACKING_URI"),
            help="MLflow tracking/registry URI (env MLFLOW_TRACKING_URI)",
        )
        sub.add_argument(
            "--triton-url",
            default=os.environ.get("GATE_TRITON_URL"),
            help="Triton HTTP URL, e.g. http://127.0.0.1:8000 (env GATE_TRITON_URL)",
        )
        sub.add_argument(
            "--model-repository",
            default=os.environ.get("GATE_MODEL_REPOSITORY"),
            help="this environment's model repository folder (env GATE_MODEL_REPOSITORY)",
        )
        sub.add_argument(
            "--golden",
            default=os.environ.get("GATE_GOLDEN"),
            help="golden set JSON for the smoke check (env GATE_GOLDEN; default: the "
            "reference platform's golden set for --model, if it has one)",
        )
        sub.add_argument(
            "--smoke-timeout",
            type=float,
            default=_env_float("GATE_SMOKE_TIMEOUT", 2.0),
            help="seconds for the smoke inference (env GATE_SMOKE_TIMEOUT; default 2)",
        )
        sub.add_argument(
            "--ready-timeout",
            type=float,
            default=_env_float("GATE_READY_TIMEOUT", 30.0),
            help="seconds to wait for a loaded version to be ready (env GATE_READY_TIMEOUT; default 30)",
        )
        sub.add_argument(
            "--lock-timeout",
            type=float,
            default=_env_float("GATE_LOCK_TIMEOUT", 120.0),
            help="seconds to wait for another deploy to the same environment (env GATE_LOCK_TIMEOUT; default 120)",
        )
        sub.add_argument(
            "--quarantine",
            default=os.environ.get("GATE_QUARANTINE") or DEFAULT_LAYOUT,
            help=f"where a failed version goes, relative to the model's folder (env GATE_QUARANTINE; "
            f"default {DEFAULT_LAYOUT!r})",
        )
        sub.add_argument("--json", action="store_true", help="print the result as JSON")
    history = commands.add_parser("history", help="the gate's last runs, with regressions and flake rates")
    history.add_argument(
        "--history",
        default="reports/out/history.jsonl",
        help="the history file the gate appends to (pytest --history; default: reports/out/history.jsonl)",
    )
    history.add_argument("--last", type=int, default=30, help="how many runs to show (default 30)")
    history.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    which = deploy.add_mutually_exclusive_group()
    which.add_argument("--alias", help="registry alias selecting the version, e.g. A (env GATE_ALIAS)")
    which.add_argument("--version", type=int, help="registry version number (env GATE_VERSION)")
    return parser


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


def _selected(args: argparse.Namespace) -> tuple:
    """(alias, version) from the flags, else from GATE_VERSION / GATE_ALIAS as the gate sets them."""
    if args.alias is not None or args.version is not None:
        return args.alias, args.version
    version, alias = os.environ.get("GATE_VERSION", ""), os.environ.get("GATE_ALIAS", "")
    if version:
        if not version.isdigit():
            raise _Usage(f"GATE_VERSION must be a registry version number, got {version!r}")
        return None, int(version)
    if alias:
        return alias, None
    raise _Usage("say what to deploy: --alias NAME or --version N (or set GATE_ALIAS / GATE_VERSION)")


class _Usage(Exception):
    pass


def _require(value: Optional[str], flag: str, variable: str) -> str:
    if not value:
        raise _Usage(f"{flag} is required (or set {variable})")
    return value


def _deployer(args: argparse.Namespace, on_stage: Optional[Callable[[str, str], None]], steps=None):
    from suite.deploy import Deployer, DeploySettings
    from suite.environment import Environment
    from suite.golden import load_golden
    from suite.platform import REFERENCE_DIR
    from suite.registry import Registry
    from suite.triton_client import TritonControl

    model = _require(args.model, "--model", "GATE_MODEL")
    mlflow_uri = _require(args.mlflow_uri, "--mlflow-uri", "MLFLOW_TRACKING_URI")
    triton_url = _require(args.triton_url, "--triton-url", "GATE_TRITON_URL")
    repository = Path(_require(args.model_repository, "--model-repository", "GATE_MODEL_REPOSITORY"))
    if not repository.is_dir():
        raise _Usage(
            f"model repository {repository} is not a folder; pass the environment's "
            f"repository (e.g. <root>/{args.env}) with --model-repository"
        )
    golden_path = Path(args.golden) if args.golden else REFERENCE_DIR / "golden" / f"{model}.json"
    if not golden_path.is_file():
        raise _Usage(
            f"no golden set for model {model!r} at {golden_path}: the smoke check "
            f"compares outputs with one. Pass --golden PATH (or set GATE_GOLDEN)."
        )
    try:
        golden = load_golden(golden_path)
    except GateError as exc:
        raise _Usage(str(exc)) from None
    triton = TritonControl(triton_url)
    if not triton.live():
        raise _Usage(f"Triton at {triton_url} does not answer /v2/health/live; start it or fix --triton-url")
    try:
        QuarantineLayout(args.quarantine)
    except GateError as exc:
        raise _Usage(str(exc)) from None
    return Deployer(
        Registry(mlflow_uri),
        Environment(args.env, repository, triton),
        model,
        golden,
        DeploySettings(
            lock_timeout=args.lock_timeout,
            smoke_timeout=args.smoke_timeout,
            ready_timeout=args.ready_timeout,
            quarantine=args.quarantine,
        ),
        on_stage=on_stage,
        steps=steps,
    )


def _stage_hook(printing: bool) -> Callable[[str, str], None]:
    crash_at = os.environ.get(CRASH_AT_VARIABLE, "")

    def hook(when: str, stage: str) -> None:
        if printing and when == "before":
            print(f"-> {stage}", flush=True)
        if crash_at and crash_at == f"{when}:{stage}":
            print(f"!! {CRASH_AT_VARIABLE}={crash_at}: killing myself (SIGKILL)", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def deploy_command(args: argparse.Namespace, steps=None) -> int:
    alias, version = _selected(args)
    deployer = _deployer(args, _stage_hook(printing=not args.json), steps)
    result = deployer.deploy(alias=alias, version=version)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.describe())
    return 0 if result.ok else 1


def recover_command(args: argparse.Namespace, steps=None) -> int:
    from dataclasses import asdict

    deployer = _deployer(args, _stage_hook(printing=False), steps)
    records = deployer.recover()
    if args.json:
        print(json.dumps([asdict(r) for r in records], indent=2))
    else:
        print(f"recover {deployer.model} in {args.env}:")
        for r in records:
            print(f"  {r.name:<18} {r.outcome:<8} {r.duration_s * 1000:8.1f} ms  {r.detail}")
    return 0 if all(r.outcome == "passed" for r in records) else 1


def history_command(args: argparse.Namespace) -> int:
    from suite import history

    path = Path(args.history)
    if not path.exists():
        raise _Usage(f"expected a history file at {path}; there is none. Run the gate first, or pass --history PATH")
    try:
        runs, skipped = history.load(path)
    except history.HistoryError as exc:
        raise _Usage(str(exc)) from None
    for note in skipped:
        print(f"history: {note}", file=sys.stderr)
    shown = history.view(runs, max(1, args.last))
    if args.format == "json":
        print(json.dumps(shown, indent=2))
    else:
        print(history.table(shown, markdown=args.format == "markdown"))
    return 0


def main(argv: Optional[List[str]] = None, steps=None) -> int:
    """`steps`: a suite.deploy.DeploySteps to run the command line with other steps (default: the builtin ones)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "history":
            return history_command(args)
        if args.command == "deploy":
            return deploy_command(args, steps)
        return recover_command(args, steps)
    except _Usage as exc:
        print(f"python -m suite {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
