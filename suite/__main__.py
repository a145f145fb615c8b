"""Command line: `python -m suite deploy --env dev --model best_model --alias A`.

Exit status: 0 deployed, 1 deploy failed (rolled back), 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

from suite.errors import GateError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m suite", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    deploy = commands.add_parser("deploy", help="run the deploy path for one model into one environment")
    deploy.add_argument("--env", required=True, help="environment name (dev, prod, ...)")
    deploy.add_argument("--model", required=True, help="registered model name")
    which = deploy.add_mutually_exclusive_group(required=True)
    which.add_argument("--alias", help="registry alias selecting the version (the seed uses A)")
    which.add_argument("--version", type=int, help="registry version number")
    deploy.add_argument("--mlflow-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="MLflow tracking/registry URI (env MLFLOW_TRACKING_URI)")
    deploy.add_argument("--triton-url", default=os.environ.get("GATE_TRITON_URL"),
                        help="Triton HTTP URL, e.g. http://127.0.0.1:8000 (env GATE_TRITON_URL)")
    deploy.add_argument("--model-repository", default=os.environ.get("GATE_MODEL_REPOSITORY"),
                        help="this environment's model repository folder (env GATE_MODEL_REPOSITORY)")
    deploy.add_argument("--golden", default=os.environ.get("GATE_GOLDEN"),
                        help="golden set JSON for the smoke check (env GATE_GOLDEN; default: the "
                        "reference platform's golden set for --model, if it has one)")
    deploy.add_argument("--smoke-timeout", type=float, default=5.0, help="seconds for the smoke inference")
    deploy.add_argument("--lock-timeout", type=float, default=120.0,
                        help="seconds to wait for another deploy to the same environment")
    deploy.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _require(value: Optional[str], flag: str, variable: str) -> str:
    if not value:
        raise SystemExit(_usage(f"{flag} is required (or set {variable})"))
    return value


def _usage(message: str) -> int:
    print(f"python -m suite: error: {message}", file=sys.stderr)
    return 2


def deploy_command(args: argparse.Namespace) -> int:
    from suite.deploy import Deployer, DeploySettings, DeployTarget
    from suite.golden import load_golden
    from suite.platform import REFERENCE_DIR
    from suite.registry import Registry
    from suite.triton_client import TritonControl

    mlflow_uri = _require(args.mlflow_uri, "--mlflow-uri", "MLFLOW_TRACKING_URI")
    triton_url = _require(args.triton_url, "--triton-url", "GATE_TRITON_URL")
    repository = Path(_require(args.model_repository, "--model-repository", "GATE_MODEL_REPOSITORY"))
    if not repository.is_dir():
        return _usage(f"model repository {repository} is not a folder; pass the environment's "
                      f"repository (e.g. <root>/{args.env}) with --model-repository")
    golden_path = Path(args.golden) if args.golden else REFERENCE_DIR / "golden" / f"{args.model}.json"
    if not golden_path.is_file():
        return _usage(f"no golden set for model {args.model!r} at {golden_path}: the smoke check "
                      f"compares outputs with one. Pass --golden PATH (or set GATE_GOLDEN).")
    try:
        golden = load_golden(golden_path)
    except GateError as exc:
        return _usage(str(exc))
    triton = TritonControl(triton_url)
    if not triton.live():
        return _usage(f"Triton at {triton_url} does not answer /v2/health/live; start it or fix --triton-url")
    deployer = Deployer(Registry(mlflow_uri), DeployTarget(args.env, repository, triton), args.model, golden,
                        DeploySettings(lock_timeout=args.lock_timeout, smoke_timeout=args.smoke_timeout),
                        on_stage=_print_stage if not args.json else None)
    result = deployer.deploy(alias=args.alias, version=args.version)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.describe())
    return 0 if result.ok else 1


def _print_stage(when: str, stage: str) -> None:
    if when == "before":
        print(f"-> {stage}", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "deploy":
        return deploy_command(args)
    return _usage(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
