"""The platform manifest: the reference and seed manifests load; bad ones say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.errors import PlatformError
from suite.platform import default_platform_path, load_platform

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed-platform" / "platform.yaml"


def test_reference_platform_loads():
    platform = load_platform(default_platform_path())
    assert platform.model.name == "best_model" and platform.model.alias == "A"
    assert set(platform.environments) == {"dev", "prod"}
    assert platform.golden_path().is_file()


@pytest.mark.skipif(not SEED.is_file(), reason=f"the seed platform is not at {SEED}")
def test_seed_platform_loads_as_a_user_platform():
    platform = load_platform(SEED)
    assert platform.environments["prod"].namespace == "triton-prod"
    assert platform.resolve(platform.spec.monitoring.rules["dev"]).is_file()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("model: {name: m}\n", "environments: required key is missing"),
        (
            "model: {name: m}\nenvironments: {dev: {namespace: a, release: b, colour: red}}\n",
            "environments.dev.colour: unknown key",
        ),
        ("modle: {name: m}\nenvironments: {dev: {namespace: a, release: b}}\n", "modle: unknown key"),
        ("- a list\n", "must be a YAML mapping"),
        ("model: {name: m\n", "not valid YAML"),
        (
            "model: {name: m, golden: nope.json}\nenvironments: {dev: {namespace: a, release: b}}\n",
            "names files that do not exist",
        ),
    ],
)
def test_invalid_manifests_are_usage_errors_naming_the_problem(tmp_path, text, expected):
    path = tmp_path / "platform.yaml"
    path.write_text(text)
    with pytest.raises(PlatformError, match=expected):
        load_platform(path)


def test_missing_manifest_says_how_to_pass_one(tmp_path):
    with pytest.raises(PlatformError, match="does not exist.*--platform"):
        load_platform(tmp_path / "absent.yaml")
