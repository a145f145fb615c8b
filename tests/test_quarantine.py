"""Quarantine layouts as manifests declare them, and the finding Triton's version parsing makes."""

from __future__ import annotations

import pytest

from suite.errors import PlatformError
from suite.model_repo import ModelFolder
from suite.platform import load_platform
from suite.quarantine import DEFAULT_LAYOUT, QuarantineLayout, read_as_versions
from tests.platform_copies import copy_reference


def _fill(data: bytes):
    return lambda folder: (folder / "model.onnx").write_bytes(data)


@pytest.mark.parametrize(
    "layout,made,found",
    [
        (DEFAULT_LAYOUT, "4.failed_19700101T000000", ["4.failed_20261129T081323", "4.failed_20261129T081323Z_2"]),
        (
            "_quarantine/failed_v{version}_{utc}",
            "_quarantine/failed_v4_19700101T000000",
            ["_quarantine/failed_v4_2026-11-29T08:13:23Z", "_quarantine/failed_v4_1795940003"],
        ),
        ("attic/v{version}-{utc}", "attic/v4-19700101T000000", ["attic/v4-2026-11-29T08-13-23Z"]),
    ],
)
def test_layout_makes_and_finds_quarantined_versions(tmp_path, layout, made, found):
    folder = ModelFolder(tmp_path, "m", QuarantineLayout(layout))
    folder.materialize(4, _fill(b"bad"))
    moved = folder.quarantine(4, now=0)
    assert moved.relative_to(folder.path).as_posix() == made
    assert (moved / "model.onnx").read_bytes() == b"bad" and folder.versions() == []
    for name in found:
        (folder.path / name).mkdir(parents=True)
    assert [p.relative_to(folder.path).as_posix() for p in folder.quarantined(4)] == sorted([made, *found])
    assert folder.quarantined(5) == []


def test_layout_ignores_look_alikes(tmp_path):
    folder = ModelFolder(tmp_path, "m", QuarantineLayout("_quarantine/failed_v{version}_{utc}"))
    for name in (
        "4.failed_20261129T081323",
        "_quarantine/failed_vx_20261129T081323",
        "_quarantine/failed_v4_notatime",
        "_quarantine/old_v4_20261129T081323",
    ):
        (folder.path / name).mkdir(parents=True)
    assert folder.quarantined() == []


@pytest.mark.parametrize(
    "layout,problem",
    [
        ("failed_{utc}", "{version} must appear exactly once"),
        ("{version}.failed", "{utc} must appear exactly once"),
        ("/abs/{version}-{utc}", "relative"),
        ("../{version}-{utc}", "relative"),
        ("{version}/failed_{utc}", "bare version number"),
        ("{version}-{utc}-{who}", "unknown placeholders"),
    ],
)
def test_invalid_layouts_are_refused_with_the_reason(layout, problem):
    with pytest.raises(PlatformError, match="quarantine layout") as caught:
        QuarantineLayout(layout)
    assert problem in str(caught.value)


def test_manifest_declares_the_layout(tmp_path):
    platform = copy_reference(tmp_path) / "platform.yaml"
    platform.write_text(platform.read_text() + "deployer: {quarantine: '_quarantine/failed_v{version}_{utc}'}\n")
    assert load_platform(platform).quarantine.template == "_quarantine/failed_v{version}_{utc}"
    platform.write_text(platform.read_text().replace("failed_v{version}_{utc}", "failed_{utc}"))
    with pytest.raises(PlatformError, match=r"deployer.quarantine.*\{version\} must appear exactly once"):
        load_platform(platform)


def test_triton_reads_a_leading_number_as_a_version():
    assert read_as_versions(["3.failed_20261129T081323", "3", "_quarantine", "12_old", "config.pbtxt"]) == [
        "12_old",
        "3.failed_20261129T081323",
    ]
