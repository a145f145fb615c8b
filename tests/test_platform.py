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
        (
            "model: {name: m}\nenvironments: {dev: {namespace: a, release: b}}\ntriton: {args: [--http-port=9000]}\n",
            "--http-port is set by the gate on every server it starts.*remove it from triton.args",
        ),
        (
            "model: {name: m}\nenvironments: {dev: {namespace: a, release: b}}\n"
            "triton: {args: [--model-control-mode=poll]}\n",
            "--model-control-mode is set by the gate",
        ),
        (
            "model: {name: m}\nenvironments: {dev: {namespace: a, release: b}}\ntriton: {args: [strict]}\n",
            "'strict' is not a tritonserver option: write each as --name or --name=value",
        ),
        (
            "model: {name: m}\nenvironments: {dev: {namespace: a, release: b}}\ntriton: {argz: []}\n",
            "triton.argz: unknown key",
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


def test_triton_args_default_to_none_and_are_kept_in_order(tmp_path):
    path = tmp_path / "platform.yaml"
    path.write_text("model: {name: m}\nenvironments: {dev: {namespace: a, release: b}}\n")
    assert load_platform(path).spec.triton.args == []
    path.write_text(path.read_text() + "triton: {args: [--disable-auto-complete-config, --log-verbose=1]}\n")
    assert load_platform(path).spec.triton.args == ["--disable-auto-complete-config", "--log-verbose=1"]


def test_reference_triton_args_are_the_gitops_deployments():
    """The gate's servers must behave as the platform's: every option of the reference manifest's
    `triton.args` is in the reference Deployment's args, and every Deployment option the gate does
    not set itself is in `triton.args`."""
    import yaml

    from suite.platform import GATE_OWNED_TRITON_OPTIONS

    gitops = Path(__file__).resolve().parents[1] / "deploy" / "gitops"
    deployment = yaml.safe_load((gitops / "base" / "triton-deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    options = [a for a in container["args"] if a.startswith("--")]
    own = [a for a in options if a.split("=", 1)[0] not in GATE_OWNED_TRITON_OPTIONS]
    assert own == load_platform(default_platform_path()).spec.triton.args
