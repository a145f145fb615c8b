"""`mlflow server`, with its uvicorn in the same process: `python -m suite.mlflow_launcher ARGS`
takes exactly `mlflow server`'s arguments.

`mlflow server` imports mlflow (seconds), then starts uvicorn as a second process that imports
mlflow again before it answers; the embedded stack waits for both at every session start. Here
MLflow's own CLI still does everything it does (stores, security settings, the environment it
hands the server), and only its last step, spawning uvicorn, runs uvicorn here instead: same app,
same options, one import. Only `--workers 1` runs in one process; the stack asks for one worker.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Sequence

UVICORN_PREFIX = ["-m", "uvicorn"]


def _uvicorn_in_this_process(
    cmd: Sequence[str], extra_env: Optional[Dict[str, str]] = None, **_ignored: object
) -> None:
    """Stands in for `mlflow.utils.process._exec_cmd` when MLflow starts uvicorn."""
    argv: List[str] = list(cmd)
    if argv[1:3] != UVICORN_PREFIX:
        raise RuntimeError(
            f"suite.mlflow_launcher expected MLflow to start `python -m uvicorn ...`, it started "
            f"{' '.join(argv[:4])} ...; run `mlflow server` directly with this MLflow version"
        )
    os.environ.update(extra_env or {})  # read by the app when uvicorn imports it, as in the child
    import uvicorn

    uvicorn.main.main(args=argv[3:], prog_name="uvicorn")  # serves until stopped, then exits


def main(argv: Sequence[str]) -> None:
    import mlflow.server
    from mlflow.cli import cli

    if not hasattr(mlflow.server, "_exec_cmd"):
        raise RuntimeError(
            "suite.mlflow_launcher: this MLflow's server module has no _exec_cmd to run uvicorn "
            "in-process; run `mlflow server` directly"
        )
    mlflow.server._exec_cmd = _uvicorn_in_this_process
    cli.main(args=["server", *argv], prog_name="mlflow")


if __name__ == "__main__":
    main(sys.argv[1:])
