"""Run `python -m suite ...` in a fresh process forked from a warm fork server.

`import mlflow` alone takes ~2.5 s on a 2-core machine and the crash sweep starts the deployer
about 30 times. The standard library's forkserver imports the deploy path once; every command
then runs in its own forked process, a real one: a SIGKILL (GATE_CRASH_AT) ends only that process,
exactly as it would end `python -m suite deploy`.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

PRELOAD = [
    "suite.__main__",
    "suite.deploy",
    "suite.registry",
    "mlflow",
    "mlflow.artifacts",
    "mlflow.tracking",
    "tritonclient.http",
    "onnx",
]

_context: Optional[multiprocessing.context.BaseContext] = None


@dataclass
class CliResult:
    """The same fields as subprocess.CompletedProcess, which the callers used before."""

    returncode: int
    stdout: str
    stderr: str


def _context_with_preload():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(argv: List[str], env: Dict[str, str], out_path: str, err_path: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out_path), (2, err_path)):
        handle = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    from suite.__main__ import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_cli(argv: List[str], env: Dict[str, str], timeout: float = 180.0) -> CliResult:
    """`python -m suite <argv>` with environment `env`; killed (by its pid) after `timeout`."""
    context = _context_with_preload()
    with tempfile.TemporaryDirectory(prefix="gate-cli-") as scratch:
        out_path, err_path = Path(scratch) / "stdout", Path(scratch) / "stderr"
        out_path.touch()
        err_path.touch()
        process = context.Process(
            target=_child, args=(list(argv), dict(env), str(out_path), str(err_path)), daemon=True
        )
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise TimeoutError(
                f"python -m suite {' '.join(argv)} did not finish within {timeout:.0f} s; "
                f"output so far:\n{out_path.read_text()}{err_path.read_text()}"
            )
        return CliResult(process.exitcode, out_path.read_text(), err_path.read_text())
