"""The product ships only the product, and works from an installed wheel with no checkout around it.

The wheel is built from a clean copy of the sources (an in-tree build reuses `build/lib`, where a
deleted module would survive), installed with `pip install --no-deps --target`, and the gate's
smoke scenarios run from a folder outside the checkout, as a user runs them:
`pytest --pyargs scenarios -m smoke`. The project's venv has an editable install of the checkout;
PYTHONPATH (searched before site-packages, where the editable finder sits at the end of
`sys.meta_path`) makes the installed copy win, and the run itself reports which files it imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("suite", "fixtures", "scenarios", "reports")
DEV_ONLY = ("tests", "tools")
# Copied with the sources so the wheel could take them if packaging were wrong; never their output.
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "*.egg-info", "__pycache__", "*.pyc", ".hypothesis", ".ruff_cache", "out"
)

# Loaded into the gate's own pytest run with `-p`: where everything it ran came from.
PROBE = """
import json, os, sys
from pathlib import Path

def pytest_sessionfinish(session):
    from suite.platform import REFERENCE_DIR
    modules = {name: getattr(sys.modules.get(name), "__file__", None)
               for name in ("suite", "fixtures", "fixtures.plugin", "scenarios", "reports")}
    Path(os.environ["WHEEL_PROBE_OUT"]).write_text(json.dumps({
        "modules": modules, "reference": str(REFERENCE_DIR),
        "items": sorted({str(item.path) for item in session.items})}))
"""


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)


def _pip(*args: str, cwd: Path) -> None:
    proc = _run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"], cwd=cwd, timeout=600)
    assert proc.returncode == 0, (
        f"pip {' '.join(args)} failed (exit {proc.returncode}; the default isolated "
        f"build fetches setuptools from the package index):\n{proc.stdout}{proc.stderr}"
    )


def test_installed_wheel_runs_the_smoke_scenarios_outside_the_checkout(tmp_path: Path):
    source, dist, site, work, probe = (tmp_path / n for n in ("source", "dist", "site", "work", "probe"))
    shutil.copytree(ROOT, source, ignore=IGNORED, symlinks=True)
    _pip("wheel", "--no-deps", "--wheel-dir", str(dist), str(source), cwd=tmp_path)
    [wheel] = dist.glob("*.whl")

    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert not top & set(DEV_ONLY), f"the wheel ships dev-only packages: {sorted(top & set(DEV_ONLY))}"
    assert {t for t in top if not t.endswith(".dist-info")} == set(PRODUCT), sorted(top)
    for data in (
        "suite/reference/platform.yaml",
        "suite/reference/golden/best_model.json",
        "reports/templates/report.html.j2",
        "suite/triton_backends/onnxruntime/model.py",
    ):
        assert data in names, f"{data} is not in the wheel"

    _pip("install", "--no-deps", "--target", str(site), str(wheel), cwd=tmp_path)
    probe.mkdir()
    (probe / "wheel_probe.py").write_text(PROBE)
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), str(probe)]),
        PYTHONDONTWRITEBYTECODE="1",
        WHEEL_PROBE_OUT=str(tmp_path / "probe.json"),
    )

    # Which copy wins in this environment, before spending a stack on it.
    where = _run(
        [
            sys.executable,
            "-c",
            "import json, suite, fixtures, scenarios, reports; print(json.dumps("
            "[m.__file__ for m in (suite, fixtures, scenarios, reports)]))",
        ],
        cwd=work,
        env=env,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    for path in json.loads(where.stdout):
        assert Path(path).is_relative_to(site), f"imported {path}, not the installed copy under {site}"

    gate = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "scenarios",
            "-m",
            "smoke",
            "-p",
            "no:cacheprovider",
            "-p",
            "wheel_probe",
            "-q",
            "-rfEs",
            "--basetemp",
            str(tmp_path / "basetemp"),
        ],
        cwd=work,
        env=env,
        timeout=900,
    )
    output = gate.stdout[-6000:] + gate.stderr[-3000:]
    assert gate.returncode == 0, f"the smoke scenarios failed from the installed wheel:\n{output}"
    assert " passed" in gate.stdout, output

    seen = json.loads((tmp_path / "probe.json").read_text())
    for name, path in seen["modules"].items():
        assert path and Path(path).is_relative_to(site), f"the gate imported {name} from {path}, not from {site}"
    assert Path(seen["reference"]) == site / "suite" / "reference", seen["reference"]
    assert seen["items"] and all(Path(p).is_relative_to(site / "scenarios") for p in seen["items"]), seen["items"]
    assert (work / "reports" / "out" / "latest" / "summary.json").is_file(), "no report where the user runs it"
