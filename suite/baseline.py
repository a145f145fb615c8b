"""Every scenario starts from the same verified baseline, made by the platform's own deployer.

The first time, the baseline is deployed into each environment's empty repository with the
platform's deployer (the alias, as the platform deploys it), verified (served exactly, golden
answers, server ready) and saved. Before each later scenario the environment is compared with
it; any difference (a version committed by the last scenario, leftovers, a model left loaded,
a server left unready) is undone by the gate: what the repository held is moved aside as
evidence (never deleted), the saved repository is put back and Triton made to serve it. So a
scenario's verdict is the same alone and in a full session, and one true finding does not turn
into a cascade of false ones.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from suite.checks import check_server_ready, check_serves_committed
from suite.errors import GateError
from suite.golden import GoldenSet
from suite.model_repo import LOCK_FILE, ModelFolder, tree_digest
from suite.timings import BASELINE_READY_S, MODEL_LOAD_S, RELOAD_READY_S, SERVER_READY_S


class BaselineError(GateError):
    """Raised when an environment cannot be brought (back) to its verified committed baseline."""


@dataclass
class _Saved:
    version: int
    copy: Path  # the repository's content right after the baseline deploy
    digest: Dict[str, str]  # and its tree digest, to see any later change
    deploy_seconds: float  # how long the platform's deployer took for it


class Baseline:
    """The verified committed state of every environment, kept and restored by the gate.

    `deploy(environment)` runs the platform's deployer for the baseline (returns a DeployOutcome);
    `before_deploy()` may put the registry in order first (the alias back on its version).
    """

    def __init__(
        self,
        environments: Dict[str, object],
        model: str,
        golden: GoldenSet,
        deploy: Callable[[object], object],
        workdir: Path,
        before_deploy: Callable[[], None] = lambda: None,
    ):
        self.environments = environments
        self.model = model
        self.golden = golden
        self._deploy = deploy
        self._before_deploy = before_deploy
        self.workdir = Path(workdir)
        self._saved: Dict[str, _Saved] = {}
        self._evidence = itertools.count(1)
        self._lock = threading.Lock()

    def version(self, env: str) -> int:
        return self._saved[env].version

    @property
    def deploy_seconds(self) -> float:
        """The longest baseline deploy: how long a good deploy takes with this deployer."""
        return max((s.deploy_seconds for s in self._saved.values()), default=0.0)

    def ensure(self, names: Optional[Iterable[str]] = None) -> Dict[str, str]:
        """Bring every environment (or `names`) to its baseline; what was done, per environment."""
        names = list(names or self.environments)
        self._before_deploy()
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            done = dict(zip(names, pool.map(self._ensure_one, names)))
        return done

    def _ensure_one(self, name: str) -> str:
        environment = self.environments[name]
        if name not in self._saved:
            return self._establish(name, environment)
        differences = self.differences(name)
        if not differences:
            return f"v{self._saved[name].version} verified"
        evidence = self._reset(name, environment)
        problems = self.differences(name)
        if problems:
            raise BaselineError(
                f"baseline could not be restored in {name}: after putting back the saved repository "
                f"(v{self._saved[name].version}, made by the platform's deployer) and making Triton serve it: "
                + "; ".join(problems)
                + f". What the repository held before is kept in {evidence}."
            )
        return f"reset to v{self._saved[name].version} ({'; '.join(differences)[:300]}); left state kept in {evidence}"

    # -- making it ---------------------------------------------------------------------------

    def _establish(self, name: str, environment) -> str:
        if any(environment.repository.iterdir()):
            self._move_aside(name, environment)  # a reused --gate-workdir: start as a new platform does
            environment.server.restart()
        began = time.perf_counter()
        outcome = self._deploy(environment)
        seconds = time.perf_counter() - began
        if not outcome.ok:
            raise BaselineError(
                f"baseline could not be made in {name}: the platform's deployer ({outcome.deployer}) failed to "
                f"deploy the baseline ({outcome.requested}) into an empty repository, so no scenario can be "
                f"judged. It said:\n{outcome.message[-3000:]}"
            )
        current = ModelFolder(environment.repository, self.model).read_current()
        if current is None:
            raise BaselineError(
                f"baseline could not be made in {name}: the deployer reported success for "
                f"{outcome.requested} but wrote no {self.model}/current.json"
            )
        problems = self._problems(environment, current.active_version)
        if problems:
            raise BaselineError(
                f"baseline could not be made in {name}: after the platform's deployer committed "
                f"v{current.active_version}: " + "; ".join(problems)
            )
        copy = self.workdir / "baseline" / name
        shutil.rmtree(copy, ignore_errors=True)  # the gate's own copy from an earlier session
        shutil.copytree(environment.repository, copy, symlinks=True)
        self._saved[name] = _Saved(current.active_version, copy, _digest(environment.repository), seconds)
        return f"v{current.active_version} deployed by {outcome.deployer} in {seconds:.1f} s and verified"

    # -- comparing and restoring -------------------------------------------------------------------

    def differences(self, name: str) -> List[str]:
        """How the environment differs from its baseline (empty: it is the baseline)."""
        environment, saved = self.environments[name], self._saved[name]
        found = []
        now = _digest(environment.repository)
        changed = sorted(k for k in set(now) | set(saved.digest) if now.get(k) != saved.digest.get(k))
        if changed:
            found.append(f"repository differs: {changed[:8]}" + (" ..." if len(changed) > 8 else ""))
        found += self._triton_differences(environment, saved.version)
        if not found:
            found += self._problems(environment, saved.version)
        return found

    def _triton_differences(self, environment, version: int) -> List[str]:
        if not environment.server.running():
            return ["Triton is not running"]
        found = []
        loaded = environment.triton.loaded_models()
        if loaded != {self.model}:
            found.append(f"Triton has {sorted(loaded)} loaded, not only {self.model}")
        try:
            entries = [e for e in environment.triton.index() if e.name == self.model]
        except GateError as exc:
            return found + [str(exc)]
        ready = sorted(e.version for e in entries if e.state == "READY" and e.version is not None)
        if ready != [version]:
            why = "; ".join(f"v{e.version} {e.state}: {e.reason[:200]}" for e in entries if e.state != "READY")
            found.append(f"Triton serves {self.model} versions {ready}, not [{version}]" + (f" ({why})" if why else ""))
        if not environment.triton.ready():
            found.append("Triton's /v2/health/ready answers not-ready")
        return found

    def _problems(self, environment, version: int) -> List[str]:
        """The committed version is served exactly, answers golden, and the server is ready."""
        folder = ModelFolder(environment.repository, self.model)
        problems = check_serves_committed(environment.triton, folder, self.golden, expected_version=version)
        return problems + check_server_ready(environment.triton, SERVER_READY_S)

    def _reset(self, name: str, environment) -> Path:
        """Put the saved repository back and make Triton serve it; what was there is kept aside.
        Whether that worked is for `differences` to say: a failure here is reported, not raised."""
        saved = self._saved[name]
        evidence = self._move_aside(name, environment)
        for entry in saved.copy.iterdir():
            target = environment.repository / entry.name
            if entry.is_dir():
                shutil.copytree(entry, target, symlinks=True)
            else:
                shutil.copy2(entry, target)
        try:
            self._serve(environment, saved.version)
        except GateError:
            pass  # what Triton serves now is compared next, with the reason it gives
        return evidence

    def _serve(self, environment, version: int) -> None:
        """Make Triton serve the restored repository: unload strays and reload; restart if need be."""
        if environment.server.running() and not self._triton_differences(environment, version):
            return
        if environment.server.running():
            try:
                for stray in environment.triton.loaded_models() - {self.model}:
                    environment.triton.unload(stray)
                environment.triton.load(self.model)  # from disk: the saved config and version
                environment.triton.wait_version_ready(self.model, version, timeout_s=RELOAD_READY_S)
                # A version whose load failed keeps the server unready: restart at once.
                failed = environment.triton.wait_ready_or_failed(BASELINE_READY_S)
                if not failed and not self._triton_differences(environment, version):
                    return
            except GateError:  # WaitTimeout included
                pass  # a server in a failed state: restart it, as a pod would be
        environment.server.kill()
        environment.server.start()
        environment.triton.wait_model_settled(self.model, timeout_s=MODEL_LOAD_S)

    def _move_aside(self, name: str, environment) -> Path:
        with self._lock:
            evidence = self.workdir / "evidence" / f"{next(self._evidence):03d}-{name}"
        evidence.mkdir(parents=True)
        for entry in list(environment.repository.iterdir()):
            shutil.move(str(entry), str(evidence / entry.name))
        return evidence


def _digest(repository: Path) -> Dict[str, str]:
    return {k: v for k, v in tree_digest(repository).items() if k != LOCK_FILE}
