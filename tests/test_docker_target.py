"""--target docker on a real Docker engine: the read-only fault really read-only inside Triton's
container, a missing image named with its manifest key, an engine session that leaves no
container behind (also after Ctrl-C), and a dockerd of our own started and stopped by its pid.

`make test` runs under `python -m suite.targets.engine run --optional`, which provides the engine
and the images; without one (not root, no Docker) these tests skip with the reason."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import docker
import psutil
import pytest

from suite.errors import StackStartError
from suite.faults import ReadOnlyRepository
from suite.targets import docker as dk
from suite.targets.engine import SESSION_LABEL, EngineError, OwnEngine
from suite.targets.images import image_present
from suite.targets.mounts import mounts, propagating
from tests.proc_utils import interruptible

PROJECT = Path(__file__).resolve().parents[1]
ENGINE_PROBLEM = dk.engine_problem()
pytestmark = pytest.mark.skipif(ENGINE_PROBLEM is not None, reason=f"needs a Docker engine: {ENGINE_PROBLEM}")


@pytest.fixture(scope="module")
def client():
    client = dk.docker_client()
    if not image_present(client, dk.TRITON_IMAGE):
        pytest.skip(f"image {dk.TRITON_IMAGE} not built: run `make images`")
    yield client
    client.close()


@pytest.fixture
def triton(tmp_path, client):
    """A real Triton container on an empty repository, through the docker target's own plan."""
    with propagating(tmp_path):
        plan = dk.ContainerPlan(dk.new_run_id("test"), tmp_path)
        repository = tmp_path / "repository"
        (repository / "m").mkdir(parents=True)
        container, endpoints = plan.triton("dev", repository)
        container.start()
        try:
            yield SimpleNamespace(container=container, repository=repository)
        finally:
            container.stop()


def _touch_inside(container, path: str) -> str:
    code, output = container.get_wrapped_container().exec_run(["sh", "-c", f"touch {path} && echo WRITTEN"])
    return output.decode(errors="replace").strip()


def test_read_only_fault_is_read_only_where_triton_reads(triton):
    fault = ReadOnlyRepository()
    with fault.injected(SimpleNamespace(environment=SimpleNamespace(repository=triton.repository), model="m"), None):
        seen_inside = _touch_inside(triton.container, "/models/m/written-by-triton")
        with pytest.raises(OSError) as on_host:
            (triton.repository / "m" / "written-by-deployer").write_text("x")
    assert "Read-only file system" in seen_inside, seen_inside
    assert on_host.value.errno == 30  # EROFS
    assert _touch_inside(triton.container, "/models/m/after") == "WRITTEN"  # undone inside too


def test_a_bind_remounted_in_place_stays_writable_inside(triton):
    """Why the fault mounts aside and moves in: the naive way would not be a fault for Triton."""
    folder = str(triton.repository / "m")
    subprocess.run(["mount", "--bind", folder, folder], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", folder, folder], check=True)
        assert _touch_inside(triton.container, "/models/m/x") == "WRITTEN"
    finally:
        subprocess.run(["umount", folder], check=True)


def test_missing_image_names_the_manifest_key_and_make_images(tmp_path, client):
    images = dk.Images(triton="triton-gate/not-built:0")
    stack = dk.DockerStack(tmp_path, ["dev"], images, dk.new_run_id("test"))
    with pytest.raises(StackStartError) as raised:
        stack.start()
    message = str(raised.value)
    assert "image 'triton-gate/not-built:0' (the manifest's images.triton) is not in this Docker engine" in message
    assert "Run `make images`" in message
    assert client.containers.list(all=True, filters={"label": f"io.triton-gate.run-id={stack.plan.run_id}"}) == []


LEAVE_A_CONTAINER = textwrap.dedent("""
    import os, sys, time, docker
    client = docker.from_env()
    session = os.environ["GATE_DOCKER_SESSION"]
    client.containers.run(sys.argv[1], ["sleep", "300"], detach=True, network_mode="host",
                          labels={"io.triton-gate.session": session, "io.triton-gate.role": "test"})
    print("SESSION", session, flush=True)
    if sys.argv[2] == "wait":
        time.sleep(300)
""")


def _session_containers(client, session: str):
    return client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session}"})


@pytest.mark.parametrize("ending", ["exits", "ctrl-c"])
def test_engine_session_removes_every_container_it_labelled(client, ending):
    command = [
        sys.executable,
        "-m",
        "suite.targets.engine",
        "run",
        "--",
        sys.executable,
        "-c",
        LEAVE_A_CONTAINER,
        dk.TRITON_IMAGE,
        "exit" if ending == "exits" else "wait",
    ]
    run = subprocess.Popen(
        command, cwd=PROJECT, stdout=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=interruptible
    )
    line = run.stdout.readline()
    assert line.startswith("SESSION "), line
    session = line.split()[1]
    if ending == "ctrl-c":
        assert len(_session_containers(client, session)) == 1
        os.killpg(run.pid, signal.SIGINT)  # what a terminal sends to the foreground group
    run.wait(60)
    assert _session_containers(client, session) == []
    # the command's exit status is the session's: 0, or 128+SIGINT from the interrupted Python
    assert run.returncode == (0 if ending == "exits" else 128 + signal.SIGINT)


def _tiny_image(client, tmp_path: Path) -> str:
    """An image holding only /bin/true and the libraries it needs, imported from the host."""
    libs = re.findall(
        r"(/\S+\.so[.\d]*)", subprocess.run(["ldd", "/bin/true"], capture_output=True, text=True, check=True).stdout
    )
    tarball = tmp_path / "true.tar"
    with tarfile.open(tarball, "w") as tar:
        for path in ["/bin/true", *libs]:
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"))
    client.api.import_image_from_file(str(tarball), repository="triton-gate-test/true", tag="1")
    return "triton-gate-test/true:1"


@pytest.mark.skipif(os.geteuid() != 0, reason="starting dockerd needs root")
def test_own_dockerd_answers_and_is_gone_after_stop(tmp_path):
    engine = OwnEngine(tmp_path / "data").start()
    pid = engine.process.pid
    assert dk.engine_problem({"DOCKER_HOST": engine.host}) is None
    # A host-network container makes dockerd bind the host's network namespace under its exec root.
    own = docker.DockerClient(base_url=engine.host, version="auto")
    own.containers.run(_tiny_image(own, tmp_path), ["/bin/true"], network_mode="host", remove=True)
    own.close()
    assert any(engine.exec_root in m.point.parents for m in mounts())
    children = psutil.Process(pid).children(recursive=True)  # its containerd
    engine.stop()
    deadline = time.monotonic() + 10
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert [p.pid for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert not engine.exec_root.exists()
    second = OwnEngine(tmp_path / "data")
    second.start()  # the data root is free again once the first one stopped
    third = OwnEngine(tmp_path / "data")
    with pytest.raises(EngineError, match="another gate session's dockerd uses"):
        third.start()
    assert not third.exec_root.exists()  # refused: nothing of it left behind
    second.stop()
    assert [m.point for m in mounts() if engine.exec_root in m.point.parents] == []  # no mount left behind
    assert dk.engine_problem({"DOCKER_HOST": engine.host}, timeout=1) is not None
