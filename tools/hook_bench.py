"""The PostSync hook's wait, measured: `pytest --pyargs scenarios -m smoke --target k8s` against a
platform that already runs, whole process, as Argo CD waits for it.

The platform is the embedded stack (real Tritons, v1 committed in dev and prod through the real
deploy path), started once outside the timed runs. The Kubernetes API is the one stand-in
(tests/kube_api.py): no cluster can run here; it answers the two calls the smoke makes.

    python -m tools.hook_bench --runs 5 [--profile out.svg]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import yaml

_PROFILE_FORMATS = {".svg": "flamegraph", ".txt": "raw", ".json": "speedscope"}  # py-spy's, by suffix
HOOK_ARGS = ["--pyargs", "scenarios", "-m", "smoke", "--target", "k8s"]


@contextmanager
def running_platform(workdir: Path) -> Iterator[Path]:
    """The embedded stack with v1 committed in every environment, and a manifest whose
    environments point at it as `cluster:` sections; yields the manifest path."""
    from suite.deploy import Deployer
    from suite.golden import load_golden
    from suite.platform import default_platform_path, load_platform
    from suite.reference_model import build_onnx
    from suite.targets.local import LocalStack
    from tests.kube_api import cluster_section
    from tests.platform_copies import copy_reference

    reference_path = default_platform_path()
    reference = load_platform(reference_path)
    golden = load_golden(reference.golden_path())
    stack = LocalStack(workdir / "stack", reference.environments, reference.spec.triton.args).start()
    try:
        stack.registry().register_onnx(reference.model.name, build_onnx("v1"), alias=reference.model.alias)
        for environment in stack.environments.values():
            result = Deployer(stack.registry(), environment, reference.model.name, golden).deploy(
                alias=reference.model.alias
            )
            if not result.ok:
                raise RuntimeError(f"the platform to time the hook against did not deploy: {result.describe()}")
        manifest = copy_reference(workdir) / "platform.yaml"
        raw = yaml.safe_load(manifest.read_text())
        for name, spec in raw["environments"].items():
            environment = stack.environments[name]
            spec["cluster"] = cluster_section(environment.server.endpoints, str(environment.repository))
        manifest.write_text(yaml.safe_dump(raw, sort_keys=False))
        yield manifest
    finally:
        stack.stop()


def hook_argv(manifest: Path, kubeconfig: Path, report_dir: Path) -> List[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        *HOOK_ARGS,
        "--platform",
        str(manifest),
        "--kubeconfig",
        str(kubeconfig),
        "--report-dir",
        str(report_dir),
        "-q",
        "-p",
        "no:cacheprovider",
    ]


def measure(runs: int, profile: Optional[Path] = None) -> List[float]:
    """Wall seconds of `runs` hook processes (the first is a warm-up, not counted)."""
    from tests.kube_api import KubeApiStandIn, kubeconfig

    api = KubeApiStandIn()
    walls: List[float] = []
    with tempfile.TemporaryDirectory(prefix="hook-bench-") as scratch, running_platform(Path(scratch)) as manifest:
        config = kubeconfig(Path(scratch) / "kubeconfig", api.url)
        for i in range(runs + 1):
            argv = hook_argv(manifest, config, Path(scratch) / f"run-{i}")
            begin = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True)
            wall = time.perf_counter() - begin
            if done.returncode != 0:
                raise RuntimeError(f"the hook run failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr}")
            if i:
                walls.append(wall)
            print(f"hook run {i}{' (warm-up)' if not i else ''}: {wall:.2f} s", flush=True)
        if profile is not None:
            py_spy = str(Path(sys.executable).with_name("py-spy"))
            spy_format = _PROFILE_FORMATS.get(profile.suffix, "flamegraph")
            done = subprocess.run(
                [py_spy, "record", "-o", str(profile), "-r", "200", "-f", spy_format, "--", *argv],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"py-spy record failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return walls


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.hook_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--profile",
        type=Path,
        help="also record one run with py-spy: .svg flame graph, .txt collapsed stacks, .json speedscope",
    )
    options = parser.parse_args(argv)
    walls = measure(options.runs, options.profile)
    print(
        f"median {statistics.median(walls):.2f} s over {len(walls)} runs (min {min(walls):.2f}, max {max(walls):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
