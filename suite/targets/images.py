"""`make images`: the images of `--target docker`, built from Debian packages and the package index.

Each image is `deploy/images/<key>/Dockerfile` (the gate image: the project's `Dockerfile`) built
on `ARG BASE`, by default the public `debian:bookworm-slim`. Where no image registry answers (an
air-gapped site, the project's CI machines), that base is built first from Debian packages with
`debootstrap` and `docker import`, from the Debian mirror the host's apt already uses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from suite.errors import GateError

PROJECT = Path(__file__).resolve().parents[2]
IMAGE_DIR = PROJECT / "deploy" / "images"
LOCK = PROJECT / "requirements.lock"
PUBLIC_BASE = "debian:bookworm-slim"
OFFLINE_BASE = "triton-gate/debian:bookworm"  # what debootstrap builds when PUBLIC_BASE cannot be pulled
SUITE = "bookworm"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
PULL_TIMEOUT_S = 60
CONTEXT_LABEL = "io.triton-gate.context"  # the digest of the sources an image was built from


class ImageBuildError(GateError):
    """An image could not be built: says which, why (the build's last lines) and what to do."""


@dataclass(frozen=True)
class Recipe:
    key: str  # the manifest's images.<key>
    dockerfile: Path
    files: Tuple[Tuple[Path, str], ...]  # (source, name in the build context)


def _project_files() -> Tuple[Tuple[Path, str], ...]:
    names = (
        "requirements.lock",
        "pyproject.toml",
        "README.md",
        "conftest.py",
        ".dockerignore",
        "suite",
        "fixtures",
        "scenarios",
        "reports",
        "deploy",
    )
    return tuple((PROJECT / n, n) for n in names)


RECIPES: Dict[str, Recipe] = {
    "triton": Recipe(
        "triton",
        IMAGE_DIR / "triton" / "Dockerfile",
        (
            (LOCK, "requirements.lock"),
            (PROJECT / "suite" / "triton_backends" / "onnxruntime", "onnxruntime"),
            (IMAGE_DIR / "triton" / "tritonserver", "tritonserver"),
        ),
    ),
    "mlflow": Recipe("mlflow", IMAGE_DIR / "mlflow" / "Dockerfile", ((LOCK, "requirements.lock"),)),
    "prometheus": Recipe("prometheus", IMAGE_DIR / "prometheus" / "Dockerfile", ()),
    "alertmanager": Recipe("alertmanager", IMAGE_DIR / "alertmanager" / "Dockerfile", ()),
    "gate": Recipe("gate", PROJECT / "Dockerfile", _project_files()),
}


@dataclass
class Built:
    key: str
    image: str
    seconds: float
    size_mb: float
    action: str  # "built" | "present"


def _client(docker_host: Optional[str] = None):
    import docker

    if docker_host:
        return docker.DockerClient(base_url=docker_host, version="auto", timeout=600)
    return docker.from_env(timeout=600)


def image_present(client, name: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(name)
        return True
    except ImageNotFound:
        return False


def image_size_mb(client, name: str) -> float:
    return round(client.images.get(name).attrs["Size"] / 1e6, 1)


def missing_image_message(key: str, image: str) -> str:
    return (
        f"--target docker: image {image!r} (the manifest's images.{key}) is not in this Docker "
        f"engine; expected it built. Run `make images` (builds every missing image, without an "
        f"image registry if none answers) or name another image in the manifest's `images:`."
    )


# -- the base -------------------------------------------------------------------------------------


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host's apt uses for bookworm (deb822 `.sources` or one-line lists)."""
    for path in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        for block in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", block, flags=re.M))
            if SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    lists = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        if path.is_file():
            for line in path.read_text().splitlines():
                match = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line)
                if match:
                    return match.group(1)
    raise ImageBuildError(
        f"no Debian {SUITE} mirror in {sources_dir}/sources.list(.d): expected the "
        f"host's apt to name one, to build the base image from Debian packages. "
        f"Pass --base with an image that is already in the engine instead."
    )


def build_offline_base(client, workdir: Path, log=print) -> float:
    """debootstrap a minimal bookworm with Python 3.11 and import it as OFFLINE_BASE; seconds taken."""
    from suite.targets.engine import install_debian_package

    install_debian_package("debootstrap", "debootstrap", "to build the base image from Debian packages", log)
    started = time.monotonic()
    rootfs = Path(tempfile.mkdtemp(prefix="base-rootfs-", dir=workdir))
    tarball = rootfs.with_suffix(".tar")
    try:
        mirror = debian_mirror()
        log(f"building {OFFLINE_BASE} with debootstrap from the host's Debian mirror (about a minute)")
        run = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                SUITE,
                str(rootfs),
                mirror,
            ],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            raise ImageBuildError(
                f"debootstrap failed (exit {run.returncode}); last lines:\n"
                + "\n".join((run.stdout + run.stderr).splitlines()[-15:])
            )
        # debootstrap keeps the packages it downloaded: not part of an image.
        for deb in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            deb.unlink()
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        repository, tag = OFFLINE_BASE.rsplit(":", 1)
        client.api.import_image_from_file(str(tarball), repository=repository, tag=tag)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
        tarball.unlink(missing_ok=True)
    return time.monotonic() - started


def choose_base(client, requested: Optional[str], workdir: Path, log=print) -> str:
    """The requested base if present or pullable; else the offline-built Debian base."""
    from docker.errors import DockerException

    wanted = requested or PUBLIC_BASE
    if image_present(client, wanted):
        return wanted
    try:
        log(f"pulling {wanted}")
        client.api.timeout = PULL_TIMEOUT_S
        client.images.pull(wanted)
        return wanted
    except DockerException as exc:
        if requested:
            raise ImageBuildError(
                f"base image {requested!r} is not in the engine and cannot be pulled ({exc}); "
                f"expected a present or pullable image. Drop --base to build one offline."
            )
        log(f"no image registry answers for {wanted} ({type(exc).__name__}); using {OFFLINE_BASE} instead")
    finally:
        client.api.timeout = 600
    if not image_present(client, OFFLINE_BASE):
        seconds = build_offline_base(client, workdir, log)
        log(f"  {OFFLINE_BASE}: {seconds:.0f} s, {image_size_mb(client, OFFLINE_BASE):.0f} MB")
    return OFFLINE_BASE


# -- the images -----------------------------------------------------------------------------------


def _context(recipe: Recipe, into: Path) -> Path:
    shutil.copy2(recipe.dockerfile, into / "Dockerfile")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "out", "*.egg-info")
    for source, name in recipe.files:
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=skip)
        elif source.exists():
            shutil.copy2(source, into / name)
    if HOST_CA.is_file():
        shutil.copy2(HOST_CA, into / "build-ca.crt")
    return into


def context_digest(context: Path) -> str:
    """What the image is built from: every file of its context (the CA bundle aside), hashed."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file() and p.name != "build-ca.crt"):
        digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def built_from(client, image: str) -> Optional[str]:
    """The context digest an image present in the engine was built from (None: absent or foreign)."""
    from docker.errors import ImageNotFound

    try:
        return (client.images.get(image).labels or {}).get(CONTEXT_LABEL)
    except ImageNotFound:
        return None


def build_image(client, recipe: Recipe, image: str, base: str, context: Path, digest: str) -> float:
    """docker build with host networking (no bridge here); seconds taken, or ImageBuildError."""
    started = time.monotonic()
    lines: List[str] = []
    error = None
    for chunk in client.api.build(
        path=str(context),
        tag=image,
        buildargs={"BASE": base},
        labels={CONTEXT_LABEL: digest},
        network_mode="host",
        rm=True,
        forcerm=True,
        decode=True,
    ):
        lines.extend(chunk.get("stream", "").splitlines())
        error = chunk.get("error") or error
    if error:
        tail = "\n".join(line for line in lines[-25:] if line.strip())
        raise ImageBuildError(
            f"building {image} (images.{recipe.key}) from {recipe.dockerfile} on {base} "
            f"failed: {error.strip()}\nLast lines of the build:\n{tail}"
        )
    return time.monotonic() - started


def build_images(
    images: Dict[str, str],
    keys: Sequence[str],
    missing_only: bool,
    workdir: Path,
    base: Optional[str] = None,
    log=print,
    docker_host: Optional[str] = None,
) -> List[Built]:
    client = _client(docker_host)
    workdir.mkdir(parents=True, exist_ok=True)
    done: List[Built] = []
    chosen_base = None
    for key in keys:
        image = images[key]
        with tempfile.TemporaryDirectory(prefix=f"context-{key}-", dir=workdir) as tmp:
            context = _context(RECIPES[key], Path(tmp))
            digest = context_digest(context)
            # Up to date: built here from this very context. An image we did not build (the
            # manifest names one of the user's) is used as it is.
            present = image_present(client, image)
            if missing_only and present and built_from(client, image) in (digest, None):
                done.append(Built(key, image, 0.0, image_size_mb(client, image), "present"))
                continue
            chosen_base = chosen_base or choose_base(client, base, workdir, log)
            log(f"building {image} (images.{key}) on {chosen_base}" + (" (its sources changed)" if present else ""))
            seconds = build_image(client, RECIPES[key], image, chosen_base, context, digest)
        done.append(Built(key, image, round(seconds, 1), image_size_mb(client, image), "built"))
        log(f"  {image}: {seconds:.0f} s, {done[-1].size_mb:.0f} MB")
    return done


def main(argv: Optional[Sequence[str]] = None) -> int:
    from suite.platform import load_platform
    from suite.targets.docker import Images

    parser = argparse.ArgumentParser(prog="python -m suite.targets.images", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--platform",
        type=Path,
        default=PROJECT / "deploy" / "platform.yaml",
        help="the manifest whose `images:` section names the images",
    )
    parser.add_argument("--only", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    parser.add_argument("--rebuild", action="store_true", help="build even the images already present")
    parser.add_argument("--base", default=None, help=f"base image (default {PUBLIC_BASE}, else built offline)")
    parser.add_argument("--workdir", type=Path, default=PROJECT / "build" / "images")
    parser.add_argument(
        "--record",
        type=Path,
        default=PROJECT / "reports" / "out" / "images.json",
        help="where build times and sizes are written",
    )
    args = parser.parse_args(argv)
    names = vars(Images.choose(load_platform(args.platform).spec.images))
    from docker.errors import DockerException

    from suite.targets.engine import docker_engine

    try:
        with docker_engine() as host:  # the engine that answers, else one started for the build
            done = build_images(names, args.only, not args.rebuild, args.workdir, args.base, docker_host=host)
    except (GateError, DockerException) as exc:
        print(f"make images: {exc}", file=sys.stderr)
        return 1
    args.record.parent.mkdir(parents=True, exist_ok=True)
    args.record.write_text(json.dumps([asdict(b) for b in done], indent=2) + "\n")
    for b in done:
        print(f"{b.key:13} {b.image:42} {b.action:8} {b.seconds:6.0f} s {b.size_mb:7.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
