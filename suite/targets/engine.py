"""A Docker engine for `--target docker`: the one that answers, else one this command starts.

`python -m suite.targets.engine run -- CMD...` runs CMD with DOCKER_HOST pointing at an engine.
When none answers and this is root, it installs Debian's `docker.io` if missing and starts
`dockerd` in its own session: no bridge, no iptables (the project's traffic stays on 127.0.0.1),
its data root under the project's `build/docker` (images survive the run), its
socket and state in a fresh folder under /run. At the end, even after Ctrl-C, it removes every
container of this run (label `io.triton-gate.session`) and stops the dockerd it started, by pid.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import filelock

from suite.errors import GateError
from suite.targets.mounts import mounts
from suite.waiting import WaitTimeout, wait_for

PROJECT = Path(__file__).resolve().parents[2]
DATA_ROOT = PROJECT / "build" / "docker"
SESSION_LABEL = "io.triton-gate.session"
SESSION_VARIABLE = "GATE_DOCKER_SESSION"  # containers started under it carry it as SESSION_LABEL
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


class EngineError(GateError):
    """No Docker engine and none could be started: says why and what to do."""


def answers(host: Optional[str], timeout: float = 3.0) -> bool:
    import docker
    import requests
    from docker.errors import DockerException

    try:
        client = docker.DockerClient(base_url=host or "unix:///var/run/docker.sock", version="auto", timeout=timeout)
        client.ping()
        client.close()
        return True
    except (DockerException, OSError, requests.RequestException):
        return False


def install_debian_package(command: str, package: str, why: str, log=print) -> None:
    """`package` from Debian when `command` is missing, as root; a clear error anywhere else."""
    if shutil.which(command):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise EngineError(
            f"{command} is not installed: expected it {why}. Install it as root (`apt-get install {package}`)."
        )
    log(f"installing Debian's {package}")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL,
    )


def install_docker(log=print) -> None:
    install_debian_package(
        "dockerd",
        "docker.io",
        "to start a Docker engine, since none answers (or start your own and set DOCKER_HOST)",
        log,
    )


class OwnEngine:
    """A dockerd this run started: its own session, its own socket, stopped by its pid."""

    def __init__(self, data_root: Path = DATA_ROOT):
        self.data_root = data_root
        # Short: a unix socket path may not exceed 108 bytes.
        self.exec_root = Path(tempfile.mkdtemp(prefix="triton-gate-docker-", dir="/run"))
        self.host = f"unix://{self.exec_root}/docker.sock"
        self.log_path = self.data_root.parent / "dockerd.log"
        self.process: Optional[subprocess.Popen] = None
        self._lock: Optional[filelock.FileLock] = None

    def start(self) -> "OwnEngine":
        if os.geteuid() != 0:
            raise EngineError(
                "no Docker engine answers, and starting one needs root; start Docker "
                "yourself and set DOCKER_HOST, or run as root."
            )
        self.data_root.mkdir(parents=True, exist_ok=True)
        # One dockerd per data root: a second one on the same folder would corrupt it.
        self._lock = filelock.FileLock(str(self.data_root) + ".lock")
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            self._lock = None
            shutil.rmtree(self.exec_root)
            raise EngineError(
                f"another gate session's dockerd uses {self.data_root}; expected it free. "
                f"Wait for that session, or point DOCKER_HOST at an engine of your own."
            ) from None
        argv = [
            "dockerd",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.exec_root}/dockerd.pid",
            f"--host={self.host}",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

        def answered_or_exited() -> Optional[str]:
            if answers(self.host, timeout=2):
                return "answers"
            return "exited" if self.process.poll() is not None else None

        try:
            outcome = wait_for(
                answered_or_exited,
                timeout_s=READY_TIMEOUT_S,
                interval_s=0.3,
                awaiting=f"dockerd to answer at {self.host}",
            )
        except WaitTimeout:
            outcome = "silent"
        if outcome != "answers":
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
            self.stop()
            raise EngineError(
                f"dockerd did not answer at {self.host} within {READY_TIMEOUT_S} s "
                f"(exit code {self.process.returncode}); last lines of {self.log_path}:\n{tail}"
            )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # dockerd stops its containers and containerd on SIGTERM
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # dockerd leaves the host network namespace bound under its exec root once a host-network
        # container ran (netns/default): unmount what is left there before removing the folder.
        for mount in reversed(mounts()):
            if mount.point == self.exec_root or self.exec_root in mount.point.parents:
                done = subprocess.run(["umount", str(mount.point)], capture_output=True)
                if done.returncode != 0:
                    subprocess.run(["umount", "-l", str(mount.point)], check=True)
        shutil.rmtree(self.exec_root)
        if self._lock is not None:
            self._lock.release()


def remove_session_containers(host: str, session: str) -> List[str]:
    """Force-remove every container labelled with this session; the names removed."""
    import docker

    client = docker.DockerClient(base_url=host, version="auto", timeout=30)
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session}"}):
        container.remove(force=True, v=True)
        removed.append(container.name)
    client.close()
    return removed


@contextmanager
def docker_engine(log=print) -> Iterator[str]:
    """DOCKER_HOST of an engine that answers: the user's, else one started (and stopped) here."""
    host = os.environ.get("DOCKER_HOST")
    if answers(host):
        yield host or "unix:///var/run/docker.sock"
        return
    install_docker(log)
    engine = OwnEngine()
    log(f"starting dockerd (data root {engine.data_root}, socket {engine.host})")
    engine.start()
    try:
        yield engine.host
    finally:
        engine.stop()


def run(
    command: Sequence[str],
    build_images_of: Optional[Path] = None,
    image_keys: Sequence[str] = (),
    optional: bool = False,
    log=print,
) -> int:
    """CMD with DOCKER_HOST and a session label; its containers removed afterwards, always.
    With `build_images_of` (a manifest), first build the images it names (`image_keys`) that the
    engine lacks. `optional`: without an engine, say why and run CMD anyway (its docker tests skip)."""
    session = uuid.uuid4().hex[:12]
    with ExitStack() as cleanup:
        try:
            host = cleanup.enter_context(docker_engine(log))
        except EngineError as exc:
            if not optional:
                raise
            log(f"no Docker engine ({exc}); running without one")
            return _wait(subprocess.Popen(list(command)))
        if build_images_of is not None:
            from suite.targets import images

            os.environ["DOCKER_HOST"] = host  # the builder uses this engine, not one of its own
            if images.main(["--platform", str(build_images_of), "--only", *image_keys]) != 0:
                return 1
        env = {
            **os.environ,
            "DOCKER_HOST": host,
            SESSION_VARIABLE: session,
            # Ryuk's image cannot be pulled without a registry: containers are removed by label here.
            "TESTCONTAINERS_RYUK_DISABLED": "true",
        }
        child = subprocess.Popen(list(command), env=env)
        try:
            return _wait(child)
        finally:
            left = remove_session_containers(host, session)
            if left:
                log(f"removed containers left by the run: {', '.join(left)}")


class Terminated(Exception):
    """SIGTERM, as an exception, so that the engine this run started is stopped on the way out."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _wait(child: subprocess.Popen) -> int:
    """The child's exit status; Ctrl-C reaches it too (same process group): let it clean up first.
    SIGTERM (a CI job cancelled) is passed on to it, and it too is waited for."""
    while True:
        try:
            status = child.wait()
            return 128 - status if status < 0 else status  # killed by signal N: 128+N, as a shell says
        except KeyboardInterrupt:
            continue
        except Terminated:
            child.terminate()
            continue


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suite.targets.engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    run_parser = sub.add_parser("run", help="run a command against an engine (started here if none answers)")
    run_parser.add_argument(
        "--images",
        type=Path,
        metavar="MANIFEST",
        default=None,
        help="first build the images this manifest names that the engine lacks",
    )
    run_parser.add_argument(
        "--only",
        nargs="+",
        default=["triton", "mlflow", "prometheus", "alertmanager"],
        metavar="KEY",
        help="with --images: which of the manifest's images (default: the stack's)",
    )
    run_parser.add_argument(
        "--optional", action="store_true", help="without an engine (not root, no Docker), run the command anyway"
    )
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("expected a command after --")
    # Without this, SIGTERM would end this process at once and leave the engine it started running.
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return run(command, args.images, args.only, args.optional)
    except Terminated:
        print("docker engine: terminated (SIGTERM); the engine this run started was stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
    except EngineError as exc:
        print(f"docker engine: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
