"""The GitOps reference and the gate image: rendered, schema-validated, cross-checked, and broken on purpose."""

from __future__ import annotations

import base64
import copy
import shutil
from pathlib import Path
from typing import Callable, Dict, List

import pytest
import tomllib
import yaml

from suite.platform import Platform, default_platform_path, load_platform
from tools import gitops
from tools.gitops import EnvExpectation, Obj

BASE = gitops.GITOPS_DIR / "base"
MONITORING = gitops.REPO_ROOT / "deploy" / "monitoring"
ENVS = ("dev", "prod")


@pytest.fixture(scope="module")
def platform() -> Platform:
    return load_platform(default_platform_path())


@pytest.fixture(scope="module")
def envs(platform: Platform) -> Dict[str, EnvExpectation]:
    return gitops.expectations(platform)


@pytest.fixture(scope="module")
def gate_image() -> str:
    return gitops.pinned_images(BASE / "kustomization.yaml")["triton-deploy-gate"]


@pytest.fixture(scope="module")
def rendered() -> Dict[str, List[Obj]]:
    return {env: gitops.render(gitops.GITOPS_DIR / "overlays" / env) for env in ENVS}


def problems_of(
    objects: List[Obj], env: str, envs: Dict[str, EnvExpectation], platform: Platform, gate_image: str
) -> List[str]:
    others = [e for name, e in envs.items() if name != env]
    return gitops.cross_check(objects, envs[env], others, platform.model.name, gate_image, platform.environments[env])


def one(objects: List[Obj], kind: str) -> Obj:
    found = gitops.of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {[gitops.ref(o) for o in found]}"
    return found[0]


# -- the reference as shipped --------------------------------------------------------------------


def test_every_env_of_the_platform_has_an_overlay(envs):
    assert sorted(envs) == sorted(ENVS)
    for env in envs:
        assert (gitops.GITOPS_DIR / "overlays" / env / "kustomization.yaml").is_file()


@pytest.mark.parametrize("env", ENVS)
def test_overlay_renders_every_piece(rendered, env):
    kinds = sorted(o["kind"] for o in rendered[env])
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Job",
            "PersistentVolumeClaim",
            "PrometheusRule",
            "Role",
            "RoleBinding",
            "Secret",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )


@pytest.mark.parametrize("env", ENVS)
def test_every_object_matches_the_kubernetes_schemas(rendered, env):
    # Built-in kinds against kubernetes-validate's bundled (offline) schemas, strict; the CRDs it
    # has no schema for (ServiceMonitor, PrometheusRule) by their required structure.
    assert gitops.validate_schemas(rendered[env]) == []


@pytest.mark.parametrize("env", ENVS)
def test_cross_references_hold(rendered, env, envs, platform, gate_image):
    assert problems_of(rendered[env], env, envs, platform, gate_image) == []


@pytest.mark.parametrize("env", ENVS)
def test_prometheus_rule_loads_in_promtool(rendered, env):
    if not shutil.which("promtool"):
        pytest.skip("promtool is missing: `make test` installs the Debian package prometheus")
    assert gitops.promtool_check_rules(one(rendered[env], "PrometheusRule")) == []


@pytest.mark.parametrize("env", ENVS)
def test_monitoring_files_are_used_as_they_are(rendered, env, platform):
    # No copies that could drift: the Secret holds the env's file byte for byte, the rule is the file.
    secret = one(rendered[env], "Secret")
    alertmanager = platform.resolve(platform.spec.monitoring.alertmanager[env])
    assert base64.b64decode(secret["data"]["alertmanager.yaml"]) == alertmanager.read_bytes()
    assert secret["metadata"]["namespace"] == platform.environments[env].release
    rules = yaml.safe_load(platform.resolve(platform.spec.monitoring.rules).read_text())
    assert one(rendered[env], "PrometheusRule")["spec"] == rules["spec"]


def test_argo_cd_applications_point_at_the_overlays(envs):
    apps = gitops.render(gitops.GITOPS_DIR / "argocd")
    assert gitops.validate_schemas(apps) == []  # Application: a CRD, checked structurally
    assert gitops.check_applications(apps, envs) == []
    assert {a["metadata"]["namespace"] for a in apps} == {"argocd"}


def test_gate_image_is_named_in_one_place_and_tagged_with_the_version(gate_image, rendered):
    version = tomllib.loads((gitops.REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    name, tag = gate_image.rsplit(":", 1)
    assert tag == version, "tag the gate image with the project version it was built from"
    files = [p for p in gitops.GITOPS_DIR.rglob("*.yaml") if name in p.read_text()]
    assert files == [BASE / "kustomization.yaml"], f"{name} must be set only in base/kustomization.yaml"
    raw_job = yaml.safe_load((BASE / "smoke-job.yaml").read_text())
    assert gitops._containers(raw_job)[0]["image"] == "triton-deploy-gate"
    assert f"docker build -t {gate_image} ." in (gitops.REPO_ROOT / "Dockerfile").read_text()
    for env in ENVS:  # and the rendered hook runs exactly that image
        assert gitops._containers(one(rendered[env], "Job"))[0]["image"] == gate_image


def test_every_image_is_pinned_by_the_base(rendered):
    pinned = set(gitops.pinned_images(BASE / "kustomization.yaml").values())
    for env in ENVS:
        for obj in rendered[env]:
            for container in gitops._containers(obj):
                assert container["image"] in pinned, f"{gitops.ref(obj)}: {container['image']} not pinned"
                assert not container["image"].endswith(":latest")


def test_dockerfile_builds_from_existing_inputs_as_non_root_pytest():
    assert gitops.check_dockerfile(gitops.REPO_ROOT / "Dockerfile", gitops.REPO_ROOT) == []


def test_dockerfile_installs_the_lock_without_triton():
    kept, dropped = gitops.lock_without(gitops.REPO_ROOT / "requirements.lock", gitops.REPO_ROOT / "Dockerfile")
    assert [d.split("==")[0] for d in dropped] == ["nvidia-pytriton"]
    assert any(k.startswith("pytest==") for k in kept)


def test_hook_runs_as_the_image_user(rendered):
    user = gitops.dockerfile_user(gitops.dockerfile_instructions(gitops.REPO_ROOT / "Dockerfile"))
    for env in ENVS:
        pod = gitops._pod_spec(one(rendered[env], "Job"))
        assert str(pod["securityContext"]["runAsUser"]) == user
        assert pod["securityContext"]["runAsNonRoot"] is True


# -- broken on purpose: every check must be able to fail ------------------------------------------


@pytest.fixture
def deploy_copy(tmp_path: Path) -> Path:
    """A copy of deploy/ (gitops and monitoring), so an overlay can be broken without touching ours."""
    shutil.copytree(gitops.REPO_ROOT / "deploy", tmp_path / "deploy")
    return tmp_path / "deploy"


def edit_kustomization(path: Path, change: Callable[[dict], None]) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_service_monitor_with_the_other_envs_release_is_caught(deploy_copy, envs, platform, gate_image):
    # The likely slip: dev's overlay written from prod's and its release label left as it was.
    # (A patch on the ServiceMonitor alone would be overridden by the overlay's `labels:`.)
    overlay = deploy_copy / "gitops" / "overlays" / "dev"
    edit_kustomization(
        overlay / "kustomization.yaml", lambda doc: doc["labels"][0]["pairs"].update(release="monitoring-prod")
    )
    problems = problems_of(gitops.render(overlay), "dev", envs, platform, gate_image)
    assert any(p.startswith("ServiceMonitor/triton-dev/triton: label release='monitoring-prod'") for p in problems), (
        problems
    )
    assert any("mentions prod's 'monitoring-prod'" in p for p in problems), problems


def test_overlay_that_keeps_the_other_envs_alertmanager_config_is_caught(deploy_copy, envs, platform, gate_image):
    overlay = deploy_copy / "gitops" / "overlays" / "dev"
    edit_kustomization(overlay / "kustomization.yaml", lambda doc: doc.pop("patches"))
    problems = problems_of(gitops.render(overlay), "dev", envs, platform, gate_image)
    assert any(
        p.startswith("Secret/monitoring-prod/alertmanager-triton: namespace 'monitoring-prod'") for p in problems
    ), problems
    # Found inside the base64 data too: prod's receiver in the dev overlay.
    assert any("mentions prod's 'slack-prod'" in p for p in problems), problems


def test_job_naming_a_pvc_that_does_not_exist_is_caught(deploy_copy, envs, platform, gate_image):
    job = deploy_copy / "gitops" / "base" / "smoke-job.yaml"
    job.write_text(job.read_text().replace("claimName: triton-model-repository", "claimName: triton-models"))
    problems = problems_of(
        gitops.render(deploy_copy / "gitops" / "overlays" / "prod"), "prod", envs, platform, gate_image
    )
    assert any("names PersistentVolumeClaim 'triton-models', which is not in 'triton-prod'" in p for p in problems), (
        problems
    )


def test_an_overlay_that_does_not_render_says_why(deploy_copy):
    (deploy_copy / "monitoring" / "alertmanager-dev.yaml").unlink()
    with pytest.raises(gitops.GitOpsError, match="(?s)kubectl kustomize .* failed .*alertmanager-dev.yaml"):
        gitops.render(deploy_copy / "gitops" / "overlays" / "dev")


def _container(kind: str) -> Callable[[List[Obj]], Obj]:
    return lambda objs: gitops._containers(one(objs, kind))[0]


def _hook_args(objs: List[Obj], old: str, new: str) -> None:
    args = _container("Job")(objs)["args"]
    args[args.index(old)] = new


def _role_rule(objs: List[Obj]) -> dict:
    return one(objs, "Role")["rules"][0]


def _platform_cm(objs: List[Obj], text: str) -> None:
    one(objs, "ConfigMap")["data"]["platform.yaml"] = text


def _platform_edit(objs: List[Obj], change: Callable[[dict], None]) -> None:
    manifest = yaml.safe_load(one(objs, "ConfigMap")["data"]["platform.yaml"])
    cluster = manifest["environments"]["dev"]["cluster"]
    change(cluster)
    if not cluster:
        manifest["environments"]["dev"].pop("cluster")
    _platform_cm(objs, yaml.safe_dump(manifest))


BREAKAGES: Dict[str, tuple] = {
    "servicemonitor-selects-missing-label": (
        lambda o: one(o, "ServiceMonitor")["spec"]["selector"]["matchLabels"].update(app="triton-server"),
        "but no Service in 'triton-dev' has them",
    ),
    "servicemonitor-wrong-port": (
        lambda o: one(o, "ServiceMonitor")["spec"]["endpoints"][0].update(port="metric"),
        "endpoint port 'metric' is not a port of Service/triton-dev/triton",
    ),
    "servicemonitor-any-namespace": (
        lambda o: one(o, "ServiceMonitor")["spec"].update(namespaceSelector={"any": True}),
        "namespaceSelector reaches beyond 'triton-dev'",
    ),
    "readiness-on-server-ready": (
        lambda o: _container("Deployment")(o)["readinessProbe"]["httpGet"].update(path="/v2/health/ready"),
        "answers 400 during every reload (Triton #7014)",
    ),
    "no-startup-probe": (lambda o: _container("Deployment")(o).pop("startupProbe"), "has no startupProbe"),
    "load-model-other": (
        lambda o: _container("Deployment")(o)["args"].__setitem__(3, "--load-model=iris"),
        "--load-model='iris', expected 'best_model'",
    ),
    "poll-mode": (
        lambda o: _container("Deployment")(o)["args"].__setitem__(2, "--model-control-mode=poll"),
        "needs --model-control-mode=explicit",
    ),
    "service-in-default-namespace": (
        lambda o: one(o, "Service")["metadata"].update(namespace="default"),
        "Service/default/triton: namespace 'default', expected 'triton-dev'",
    ),
    "hook-annotation-missing-delete-policy": (
        lambda o: one(o, "Job")["metadata"]["annotations"].pop("argocd.argoproj.io/hook-delete-policy"),
        "annotation argocd.argoproj.io/hook-delete-policy=None",
    ),
    "hook-is-presync": (
        lambda o: one(o, "Job")["metadata"]["annotations"].update({"argocd.argoproj.io/hook": "PreSync"}),
        "annotation argocd.argoproj.io/hook='PreSync', expected 'PostSync'",
    ),
    "hook-retries": (lambda o: one(o, "Job")["spec"].update(backoffLimit=3), "backoffLimit=3, expected 0"),
    "hook-unbounded": (
        lambda o: one(o, "Job")["spec"].pop("activeDeadlineSeconds"),
        "activeDeadlineSeconds must bound",
    ),
    "hook-other-image": (
        lambda o: _container("Job")(o).update(image="python:3.11"),
        "image 'python:3.11', expected the gate image",
    ),
    "hook-runs-chaos": (lambda o: _hook_args(o, "smoke", "chaos"), "expected pytest scenarios -m smoke --target k8s"),
    "hook-targets-local": (lambda o: _hook_args(o, "k8s", "local"), "expected pytest scenarios -m smoke --target k8s"),
    "hook-platform-not-mounted": (
        lambda o: _hook_args(o, "/etc/gate/platform.yaml", "/work/platform.yaml"),
        "--platform /work/platform.yaml is not in a mounted ConfigMap",
    ),
    "hook-writes-the-repository": (
        lambda o: [
            m.update(readOnly=False) for m in _container("Job")(o)["volumeMounts"] if m["name"] == "model-repository"
        ],
        "must be mounted read-only",
    ),
    "hook-default-service-account": (
        lambda o: gitops._pod_spec(one(o, "Job")).update(serviceAccountName="default"),
        "serviceAccountName 'default' is not a ServiceAccount in 'triton-dev'",
    ),
    "role-can-delete": (lambda o: _role_rule(o)["verbs"].append("delete"), "grants ['delete']"),
    "role-reads-secrets": (lambda o: _role_rule(o)["resources"].append("secrets"), "covers ['secrets']"),
    "cluster-role": (
        lambda o: o.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "triton-smoke", "labels": {"release": "monitoring-dev"}},
                "rules": [],
            }
        ),
        "ClusterRole/triton-smoke: cluster-wide RBAC",
    ),
    "platform-manifest-lists-prod-too": (
        lambda o: _platform_cm(
            o,
            "model: {name: best_model}\nenvironments:\n"
            "  dev: {namespace: triton-dev, release: monitoring-dev, alert_receiver: slack-dev}\n"
            "  prod: {namespace: triton-prod, release: monitoring-prod}\n",
        ),
        "manifest environments ['dev', 'prod'], expected only 'dev'",
    ),
    "platform-manifest-invalid": (
        lambda o: _platform_cm(
            o, "model: {name: best_model}\nenvironments:\n  dev: {namespace: triton-dev, relase: monitoring-dev}\n"
        ),
        "the hook's platform manifest is not valid for the gate",
    ),
    "platform-manifest-wrong-service": (
        lambda o: _platform_edit(o, lambda c: c.update(triton_url="http://triton-server.triton-dev.svc:8000")),
        "names Service 'triton-server' in 'triton-dev', which this overlay does not define",
    ),
    "platform-manifest-wrong-port": (
        lambda o: _platform_edit(o, lambda c: c.update(triton_url="http://triton.triton-dev.svc:8080")),
        "port 8080 is not a port of Service/triton-dev/triton",
    ),
    "platform-manifest-default-pod-selector": (
        lambda o: _platform_edit(o, lambda c: c.update(pod_selector="app=triton")),
        "pod_selector 'app=triton' selects no Deployment's pods",
    ),
    "platform-manifest-repository-elsewhere": (
        lambda o: _platform_edit(o, lambda c: c.update(model_repository="/models/dev")),
        "model_repository '/models/dev' is not where the hook mounts",
    ),
    "platform-manifest-without-cluster": (
        lambda o: _platform_edit(o, lambda c: c.clear()),
        "has no `cluster:` section",
    ),
    "platform-manifest-other-model": (
        lambda o: _platform_cm(
            o,
            "model: {name: iris}\nenvironments:\n"
            "  dev: {namespace: triton-dev, release: monitoring-dev, alert_receiver: slack-dev}\n",
        ),
        "manifest model 'iris', but Triton loads 'best_model'",
    ),
}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_each_broken_reference_is_caught(name, rendered, envs, platform, gate_image):
    objects = copy.deepcopy(rendered["dev"])
    breakage, expected = BREAKAGES[name]
    breakage(objects)
    problems = problems_of(objects, "dev", envs, platform, gate_image)
    assert any(expected in p for p in problems), f"{name}: expected a problem containing {expected!r}, got {problems}"


SCHEMA_BREAKAGES: Dict[str, tuple] = {
    "replicas-as-text": (lambda o: one(o, "Deployment")["spec"].update(replicas="one"), "spec.replicas"),
    "unknown-field": (lambda o: _container("Deployment")(o).update(readinesProbe={}), "readinesProbe"),
    "port-as-name": (lambda o: one(o, "Service")["spec"]["ports"][0].update(port="http"), "spec.ports.0.port"),
    "job-without-template": (lambda o: one(o, "Job")["spec"].pop("template"), "'template' is a required property"),
    "servicemonitor-without-selector": (
        lambda o: one(o, "ServiceMonitor")["spec"].pop("selector"),
        "spec.selector is required",
    ),
    "rule-without-expr": (
        lambda o: one(o, "PrometheusRule")["spec"]["groups"][0]["rules"][0].pop("expr"),
        "rules[0].expr is required",
    ),
    "crd-without-any-check": (
        lambda o: o.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "x"}}),
        "no Kubernetes 1.32 schema for monitoring.coreos.com/v1 PodMonitor",
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEMA_BREAKAGES))
def test_each_schema_violation_is_caught(name, rendered):
    objects = copy.deepcopy(rendered["dev"])
    breakage, expected = SCHEMA_BREAKAGES[name]
    breakage(objects)
    problems = gitops.validate_schemas(objects)
    assert any(expected in p for p in problems), f"{name}: expected {expected!r} in {problems}"


def test_application_pointing_at_the_wrong_overlay_is_caught(envs):
    apps = gitops.render(gitops.GITOPS_DIR / "argocd")
    prod = next(a for a in apps if a["metadata"]["name"] == "triton-prod")
    prod["spec"]["source"]["path"] = "deploy/gitops/overlays/dev"
    problems = gitops.check_applications(apps, envs)
    assert any("source.path 'deploy/gitops/overlays/dev' is not the prod overlay" in p for p in problems), problems
    prod["spec"].pop("destination")
    assert any("spec.destination is required" in p for p in gitops.validate_schemas(apps))


def test_broken_rule_is_caught_by_promtool(rendered):
    if not shutil.which("promtool"):
        pytest.skip("promtool is missing: `make test` installs the Debian package prometheus")
    rule = copy.deepcopy(one(rendered["dev"], "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["expr"] = 'up{job="triton" == 0'
    assert gitops.promtool_check_rules(rule)


def test_broken_dockerfile_is_caught(tmp_path):
    (tmp_path / "requirements.lock").write_text("pytest==9.2.0\n")
    (tmp_path / ".dockerignore").write_text("tests\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "Dockerfile").write_text(
        "FROM nvcr.io/nvidia/tritonserver:24.10-py3\nCOPY requirements.lock missing.txt ./\n"
        "COPY tests/ tests/\nRUN pip install --no-deps .\nRUN pip install \\\n -r requirements.lock\n"
        "USER root\nENTRYPOINT pytest\n"
    )
    problems = "\n".join(gitops.check_dockerfile(tmp_path / "Dockerfile", tmp_path))
    for expected in (
        "COPY missing.txt: not in the build context",
        "COPY tests/: excluded by .dockerignore",
        "USER is 'root'",
        "ENTRYPOINT is 'pytest'",
        "then `pip install --no-deps .`",
        "must not contain Triton",
    ):
        assert expected in problems, f"{expected!r} not in:\n{problems}"
