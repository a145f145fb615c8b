"""`make bench`: medians of what users wait for (the PostSync hook, the full gate, our own CI),
of the smoke subset, stack start-up and each deploy stage against its floor (the same Triton and
MLflow calls made directly, on the same stack, in the same run, without the suite around them).
With `--readme`, the table replaces the README's bench block, each figure beside the one it had.

    python -m tools.bench --runs 3 --smoke-runs 5 --hook-runs 5 --stage-repeats 7 [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

from suite.deploy import STAGES  # the deploy path's stage names, defined once

# What each measure should stay within (issue 14: hook and gate walls, our CI's `make test`).
GOALS = {"hook_wall_s": 2.0, "gate_wall_s": 150.0, "ci_test_s": 12 * 60.0, "smoke_checks_s": 3.0, "stage_ratio": 1.2}
README_BEGIN, README_END = "<!-- bench:begin -->", "<!-- bench:end -->"
VALUES_COMMENT = re.compile(r"<!-- bench-values: (\{.*?\}) -->")


# -- whole runs, as a user runs them ------------------------------------------------------------


def run_gate(args: List[str], report_dir: Path) -> Dict:
    """One pytest session in a fresh process; its wall time and its summary.json."""
    begin = time.perf_counter()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *args,
            "-q",
            "-p",
            "no:cacheprovider",
            "--report-dir",
            str(report_dir),
            "--report-format",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - begin
    summary_path = report_dir / "latest" / "summary.json"
    if not summary_path.exists():
        raise RuntimeError(
            f"pytest {' '.join(args)} wrote no summary (exit {completed.returncode}):\n"
            + completed.stdout[-3000:]
            + completed.stderr[-3000:]
        )
    return {"wall_s": wall, "exit": completed.returncode, "summary": json.loads(summary_path.read_text())}


def smoke_check_seconds(summary: Dict) -> float:
    """The smoke checks themselves, with the platform already up and committed: call phases only
    (stack start-up and the first deploy land in the first test's setup and are reported apart)."""
    return sum(s["phases"].get("call", 0.0) for s in summary["scenarios"] if "smoke" in s["markers"])


# -- stages: the suite's deploy path against the bare calls ----------------------------------------


class FloorPath:
    """The deploy path's Triton and MLflow calls, made directly with tritonclient and mlflow."""

    def __init__(self, mlflow_uri: str, triton_url: str, repository: Path, registered: str, golden):
        import tritonclient.http as httpclient
        from mlflow import MlflowClient

        self.mlflow_uri = mlflow_uri
        self.mlflow = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
        self.triton = httpclient.InferenceServerClient(triton_url.split("://", 1)[-1], network_timeout=120)
        self.repository = repository
        self.registered = registered  # the registry name the suite deploys too
        self.model = "floor_model"  # served under its own name, beside the suite's model
        self.golden = golden

    def _infer(self, model: str, version: int) -> None:
        import tritonclient.http as httpclient

        from suite.triton_client import triton_datatype

        inputs = []
        for name, array in self.golden.inputs.items():
            tensor = httpclient.InferInput(name, list(array.shape), triton_datatype(array))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        self.triton.infer(
            model,
            inputs,
            model_version=str(version),
            outputs=[httpclient.InferRequestedOutput(n) for n in self.golden.expected],
        )

    def cycle(self, version: int) -> Dict[str, float]:
        import mlflow.artifacts

        from suite import model_config

        timings: Dict[str, float] = {}
        folder = self.repository / self.model
        candidate = f"{self.model}__candidate"

        def timed(stage: str, action) -> None:
            begin = time.perf_counter()
            action()
            timings[stage] = time.perf_counter() - begin

        timed("register", lambda: self.mlflow.get_model_version(self.registered, str(version)))
        scratch = Path(tempfile.mkdtemp(dir=self.repository))

        def materialize() -> None:
            location = self.mlflow.get_model_version_download_uri(self.registered, str(version))
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=location, dst_path=str(scratch), tracking_uri=self.mlflow_uri
                )
            )
            (folder / str(version)).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local / "model.onnx", folder / str(version) / "model.onnx")

        timed("materialize", materialize)
        shutil.rmtree(scratch)
        onnx_bytes = (folder / str(version) / "model.onnx").read_bytes()
        config = model_config.from_onnx(self.model, folder / str(version) / "model.onnx")
        live = model_config.pinned(config, version)
        candidate_config = model_config.pinned(config, version)
        candidate_config.name = candidate
        timed(
            "load",
            lambda: self.triton.load_model(
                candidate,
                config=model_config.to_json(candidate_config),
                files={f"file:{version}/model.onnx": onnx_bytes},
            ),
        )
        timed("ready", lambda: self.triton.is_model_ready(candidate, str(version)))
        timed("smoke", lambda: self._infer(candidate, version))

        def commit() -> None:
            self.triton.load_model(self.model, config=model_config.to_json(live))
            while True:  # the same settle condition the suite waits for: nothing loading or unloading
                index = [e for e in self.triton.get_model_repository_index() if e.get("name") == self.model]
                if not any(e.get("state") in ("LOADING", "UNLOADING") for e in index) and self.triton.is_model_ready(
                    self.model, str(version)
                ):
                    break
                time.sleep(0.05)
            self._infer(self.model, version)
            self.triton.unload_model(candidate)
            for name, text in (
                ("config.pbtxt", model_config.render(live)),
                ("current.json", json.dumps({"active_version": version})),
            ):
                (folder / f".{name}.tmp").write_text(text)
                os.replace(folder / f".{name}.tmp", folder / name)

        timed("commit", commit)
        return timings


def measure_stages(workdir: Path, repeats: int) -> Dict[str, Dict[str, List[float]]]:
    """Alternate two versions, `repeats` times, through the suite and through the floor."""
    from suite import reference_model
    from suite.deploy import Deployer
    from suite.golden import load_golden
    from suite.platform import default_platform_path, load_platform
    from suite.targets.local import LocalStack

    platform = load_platform(default_platform_path())
    golden = load_golden(platform.golden_path())
    model = platform.model.name
    measured: Dict[str, Dict[str, List[float]]] = {"suite": {s: [] for s in STAGES}, "floor": {s: [] for s in STAGES}}
    with LocalStack(workdir, ["bench"], platform.spec.triton.args) as stack:
        measured["stack_start_s"] = stack.timings["stack"]  # type: ignore[assignment]
        env = stack.environments["bench"]
        registry = stack.registry()
        versions = [
            registry.register_onnx(model, reference_model.build_onnx(variant)).version
            for variant in ("v1", "retrained")
        ]
        floor = FloorPath(stack.mlflow.uri, env.triton.http_url, env.repository, model, golden)
        deployer = Deployer(registry, env, model, golden)
        for round_ in range(repeats + 1):  # round 0 warms both paths up and is not counted
            version = versions[round_ % 2]
            floor_times = floor.cycle(version)
            result = deployer.deploy(version=version)
            if not result.ok:
                raise RuntimeError(f"bench deploy failed:\n{result.describe()}")
            if round_:
                for stage in STAGES:
                    measured["floor"][stage].append(floor_times[stage])
                    measured["suite"][stage].append(result.stage(stage).duration_s)
    return measured


# -- the table ----------------------------------------------------------------------------------


def median(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def fmt(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    if seconds >= 600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def headline_values(results: Dict) -> Dict[str, Optional[float]]:
    """The three waits users have, in seconds (None: not measured in this bench)."""
    return {
        "hook_wall_s": median(results.get("hook", [])),
        "gate_wall_s": median([r["wall_s"] for r in results["gate"]]),
        "ci_test_s": results.get("ci_test_s"),
    }


def _verdict(value: Optional[float], goal: float) -> str:
    return "–" if value is None else ("met" if value <= goal else "MISSED")


def headline(results: Dict, previous: Dict[str, Optional[float]]) -> List[str]:
    """Each wait beside its value in the previous bench and its goal."""
    now = headline_values(results)
    rows = [
        (
            "hook_wall_s",
            "PostSync hook: `pytest --pyargs scenarios -m smoke --target k8s` against a running platform, whole process",
        ),
        ("gate_wall_s", f"full gate: `pytest {results.get('gate_args', 'scenarios')}`, warm venv, wall"),
        ("ci_test_s", "our CI: `make test` in `.ci/run` on a fresh clone (from `--ci-timing`)"),
    ]
    lines = ["| what users wait for | now | previous | goal | |", "|---|---|---|---|---|"]
    for key, label in rows:
        lines.append(
            f"| {label} | {fmt(now[key])} | {fmt(previous.get(key))} | ≤ {fmt(GOALS[key])} | {_verdict(now[key], GOALS[key])} |"
        )
    return lines


def table(results: Dict, previous: Optional[Dict[str, Optional[float]]] = None) -> str:
    gate, smoke, stages = results["gate"], results["smoke"], results["stages"]
    gate_wall = median([r["wall_s"] for r in gate])
    smoke_wall = median([r["wall_s"] for r in smoke])
    smoke_checks = median([smoke_check_seconds(r["summary"]) for r in smoke])
    starts = [r["summary"]["stack"]["timings"].get("stack") for r in gate + smoke]
    stack_start = median([s for s in starts if s is not None])
    verdict = _verdict

    lines = [
        f"Bench of {results['date']} ({results['machine']}): {len(results.get('hook', []))} hook run(s), "
        f"{len(gate)} gate run(s), {len(smoke)} smoke run(s), {results['stage_repeats']} deploys per path for the stages.",
        "",
        *headline(results, previous or {}),
        "",
        "| measure | median | goal | |",
        "|---|---|---|---|",
        f"| full gate, wall (`pytest {results.get('gate_args', 'scenarios')}`) | {fmt(gate_wall)} | ≤ {GOALS['gate_wall_s']:.0f} s | {verdict(gate_wall, GOALS['gate_wall_s'])} |",
        f"| smoke subset, wall (`pytest scenarios -m smoke`, embedded stack started and first deploys included) "
        f"| {fmt(smoke_wall)} | | |",
        f"| smoke checks against the running platform (call phases) | {fmt(smoke_checks)} | "
        f"≤ {GOALS['smoke_checks_s']:.0f} s | {verdict(smoke_checks, GOALS['smoke_checks_s'])} |",
        f"| stack start-up (MLflow and Tritons in parallel) | {fmt(stack_start)} | | |",
        "",
        f"| deploy stage | in the gate runs | suite, bench | floor, bench | suite / floor | ≤ {GOALS['stage_ratio']}× |",
        "|---|---|---|---|---|---|",
    ]
    gate_stats: Dict[str, List[float]] = {}
    for run in gate:
        for name, stat in run["summary"]["stage_statistics"].items():
            gate_stats.setdefault(name, []).append(stat["median_s"])
    for stage in STAGES:
        suite_m, floor_m = median(stages["suite"][stage]), median(stages["floor"][stage])
        ratio = suite_m / floor_m if suite_m is not None and floor_m else None
        # Sub-millisecond stages are dominated by timer noise; judge them by the absolute gap.
        ok = ratio is not None and (ratio <= GOALS["stage_ratio"] or (suite_m - floor_m) < 0.002)
        lines.append(
            f"| {stage} | {fmt(median(gate_stats.get(stage, [])))} | {fmt(suite_m)} | {fmt(floor_m)} | "
            f"{'–' if ratio is None else f'{ratio:.2f}×'} | {'met' if ok else 'MISSED'} |"
        )
    lines += [
        "",
        "Where the gate's time goes (median over the gate runs; setup includes stack start-up):",
        "",
        "| scenario module | scenarios | seconds | share |",
        "|---|---|---|---|",
    ]
    for module, count, seconds, share in time_by_module([r["summary"] for r in gate]):
        lines.append(f"| `{module}` | {count} | {seconds:.1f} | {share:.0%} |")
    return "\n".join(lines)


# -- the README's bench block --------------------------------------------------------------------


def _block_span(readme: str, source: str = "README.md") -> "tuple[int, int]":
    """Where the bench block is: from its begin line to the start of its end line (each marker
    alone on its line, so that the README may name the markers in its prose)."""
    begin = re.search(rf"^{re.escape(README_BEGIN)}$", readme, re.MULTILINE)
    end = re.search(rf"^{re.escape(README_END)}$", readme, re.MULTILINE)
    if begin is None or end is None or end.start() < begin.start():
        found = "neither" if begin is None and end is None else "only one, or in the wrong order"
        raise ValueError(
            f"{source}: expected a bench block, the line {README_BEGIN} then the line {README_END}; "
            f"found {found}. Put the two lines where the table should go."
        )
    return begin.start(), end.start()


def readme_values(readme: str) -> Dict[str, Optional[float]]:
    """The headline figures the README's bench block holds now (the previous bench's)."""
    begin, end = _block_span(readme)
    found = VALUES_COMMENT.search(readme, begin, end)
    return json.loads(found.group(1)) if found else {}


def with_bench_block(readme: str, text: str, values: Dict[str, Optional[float]], source: str = "README.md") -> str:
    """`readme` with its bench block holding `text` (and `values`, for the next bench)."""
    begin, end = _block_span(readme, source)
    rounded = {key: None if value is None else round(value, 2) for key, value in values.items()}
    block = f"{README_BEGIN}\n<!-- bench-values: {json.dumps(rounded)} -->\n\n{text}\n\n"
    return readme[:begin] + block + readme[end:]


def time_by_module(summaries: List[Dict]) -> List[tuple]:
    per_run: Dict[str, List[float]] = {}
    counts: Dict[str, int] = {}
    for summary in summaries:
        totals: Dict[str, float] = {}
        for scenario in summary["scenarios"]:
            module = scenario["nodeid"].split("::")[0]
            totals[module] = totals.get(module, 0.0) + scenario["duration_s"]
            counts[module] = counts.get(module, 0) + (1 if summary is summaries[0] else 0)
        for module, seconds in totals.items():
            per_run.setdefault(module, []).append(seconds)
    medians = {m: statistics.median(v) for m, v in per_run.items()}
    whole = sum(medians.values()) or 1.0
    return sorted(((m, counts[m], s, s / whole) for m, s in medians.items()), key=lambda row: -row[2])


def _keep_wall_times(out: Path, results: Dict) -> None:
    """Runs take minutes: what was measured so far is on disk before the next one starts."""
    (out / "runs.json").write_text(
        json.dumps(
            {kind: [{"wall_s": r["wall_s"], "exit": r["exit"]} for r in results[kind]] for kind in ("smoke", "gate")},
            indent=2,
        )
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="full gate runs (default 3)")
    parser.add_argument("--smoke-runs", type=int, default=5, help="smoke subset runs (default 5)")
    parser.add_argument("--stage-repeats", type=int, default=7, help="deploys per path for the stage floors")
    parser.add_argument("--out", default="reports/out/bench", help="where bench.md and bench.json go")
    parser.add_argument("--gate-args", default="scenarios", help="what the gate runs (default: scenarios)")
    parser.add_argument("--hook-runs", type=int, default=5, help="PostSync hook runs against a running platform")
    parser.add_argument(
        "--ci-timing",
        type=Path,
        help="the ci-timing.json a `.ci/run` wrote: its `make test` is reported beside the rest",
    )
    parser.add_argument("--readme", type=Path, help="replace this README's bench block with the table")
    options = parser.parse_args(argv)
    readme = options.readme.read_text() if options.readme else None
    if readme is not None:
        with_bench_block(
            readme, "", {}, str(options.readme)
        )  # a README without the block fails now, not after the runs
    out = Path(options.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: Dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores",
        "stage_repeats": options.stage_repeats,
        "gate_args": options.gate_args,
    }
    if options.ci_timing:
        results["ci_test_s"] = json.loads(options.ci_timing.read_text())["make_test_s"]
    print(f"stages: {options.stage_repeats} deploys through the suite and through the floor ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as scratch:
        results["stages"] = measure_stages(Path(scratch), options.stage_repeats)
    results["smoke"], results["gate"] = [], []
    (out / "stages.json").write_text(json.dumps(results["stages"], indent=2))
    for i in range(options.smoke_runs):
        print(f"smoke run {i + 1}/{options.smoke_runs} ...", flush=True)
        results["smoke"].append(run_gate(["scenarios", "-m", "smoke"], out / f"smoke-{i + 1}"))
        _keep_wall_times(out, results)
    if options.hook_runs:
        from tools.hook_bench import measure as measure_hook

        print(
            f"hook: {options.hook_runs} runs of the PostSync hook's command against a running platform ...", flush=True
        )
        results["hook"] = measure_hook(options.hook_runs)
    for i in range(options.runs):
        print(f"gate run {i + 1}/{options.runs} ...", flush=True)
        results["gate"].append(run_gate(options.gate_args.split(), out / f"gate-{i + 1}"))
        _keep_wall_times(out, results)
    previous = readme_values(readme) if readme is not None else {}  # checked above: the block is there
    text = table(results, previous)
    (out / "bench.md").write_text(text + "\n")
    if readme is not None:
        # A figure not measured this time (our CI's, without --ci-timing) keeps its last value.
        kept = {
            key: value if value is not None else previous.get(key) for key, value in headline_values(results).items()
        }
        options.readme.write_text(with_bench_block(readme, text, kept, str(options.readme)))
        print(f"the bench block of {options.readme} now holds this table", flush=True)
    (out / "bench.json").write_text(
        json.dumps(
            {k: v for k, v in results.items() if k not in ("gate", "smoke")}
            | {"headline": headline_values(results)}
            | {
                "gate": [
                    {"wall_s": r["wall_s"], "exit": r["exit"], "verdict": r["summary"]["verdict"]}
                    for r in results["gate"]
                ],
                "smoke": [
                    {"wall_s": r["wall_s"], "exit": r["exit"], "smoke_checks_s": smoke_check_seconds(r["summary"])}
                    for r in results["smoke"]
                ],
            },
            indent=2,
            default=str,
        )
    )
    print(text)
    failed = [r for r in results["gate"] + results["smoke"] if r["exit"] != 0]
    if failed:
        print(f"{len(failed)} run(s) did not pass: the timings above are not a clean bench.", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
