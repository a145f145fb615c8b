"""The GitOps reference and the gate image: rendered, schema-validated, cross-checked, and broken on purpose."""

from __future__ import annotations

import base64
import copy
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest
import tomllib
import yaml

from suite.platform import Platform, default_platform_path, load_platform
from tools import gate_args, gitops
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
    return gitops.cross_check(
        objects,
        envs[env],
        others,
        platform.model.name,
        gate_image,
        platform.environments[env],
        gate_args.gate_options(),
    )


def one(objects: List[Obj], kind: str, name: Optional[str] = None) -> Obj:
    """The one object of `kind` (named `name`; a generated ConfigMap's hash suffix aside)."""
    found = [o for o in gitops.of_kind(objects, kind) if name is None or _unhashed(o) == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[gitops.ref(o) for o in found]}"
    return found[0]


def _unhashed(obj: Obj) -> str:
    name = obj["metadata"]["name"]
    return name.rsplit("-", 1)[0] if obj["kind"] == "ConfigMap" else name


# -- the reference as shipped --------------------------------------------------------------------


def test_every_env_of_the_platform_has_an_overlay(envs):
    assert sorted(envs) == sorted(ENVS)
    for env in envs:
        assert (gitops.GITOPS_DIR / "overlays" / env / "kustomization.yaml").is_file()


@pytest.mark.parametrize("env", ENVS)
def test_overlay_renders_every_piece(rendered, env):
    names = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in rendered[env])
    # Generated ConfigMaps carry a content hash: compare them without it.
    names = sorted(n.rsplit("-", 1)[0] if n.startswith("ConfigMap/") else n for n in names)
    nightly_platform = ["ConfigMap/gate-nightly-platform"] if env == "dev" else []  # prod's is the hook's
    assert names == sorted(
        [
            "ConfigMap/gate-platform",
            *nightly_platform,
            "CronJob/triton-gate-nightly",
            "Deployment/triton",
            "Job/triton-smoke",
            "PersistentVolumeClaim/triton-gate-history",
            "PersistentVolumeClaim/triton-model-repository",
            "PrometheusRule/triton-alerts",
            "Role/triton-gate-nightly",
            "Role/triton-smoke",
            "RoleBinding/triton-gate-nightly",
            "RoleBinding/triton-smoke",
            "Secret/alertmanager-triton",
            "Service/triton",
            "ServiceAccount/triton-gate-nightly",
            "ServiceAccount/triton-smoke",
            "ServiceMonitor/triton",
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
    assert str(gitops.NIGHTLY_UID) == user  # what check_nightly holds the CronJob to


def _nightly(objects: List[Obj]) -> Dict[str, object]:
    """The facts of an env's nightly gate that the envs must differ in."""
    cron = one(objects, "CronJob")
    args = gitops._containers(cron)[0]["args"]
    volumes = {v["name"]: v for v in gitops._pod_spec(cron)["volumes"]}
    repository = volumes["model-repository"]
    mounted = volumes["platform"]["configMap"]["name"]
    cm = next(o for o in gitops.of_kind(objects, "ConfigMap") if o["metadata"]["name"] == mounted)
    manifest = yaml.safe_load(cm["data"]["platform.yaml"])
    return {
        "markers": args[args.index("-m") + 1],
        "allow_destructive": "--allow-destructive" in args,
        "repository_read_only": repository["persistentVolumeClaim"].get("readOnly", False),
        "mlflow": (manifest.get("registry") or {}).get("mlflow_url") is not None,
        "history": args[args.index("--history") + 1],
    }


def test_nightly_gate_is_broad_in_dev_and_smoke_only_in_prod(rendered):
    assert _nightly(rendered["dev"]) == {
        "markers": "smoke or deploy or chaos",
        "allow_destructive": True,
        "repository_read_only": False,
        "mlflow": True,
        "history": "/var/lib/gate/history.jsonl",
    }
    assert _nightly(rendered["prod"]) == {
        "markers": "smoke",
        "allow_destructive": False,
        "repository_read_only": True,
        "mlflow": False,
        "history": "/var/lib/gate/history.jsonl",
    }


def test_dev_nightly_selects_by_marker_only(rendered):
    # No -k, --deselect or node ids: a scenario that needs what a cluster cannot give the gate
    # (killing or restarting Triton, an extra Triton, the registry's files, the gate's own
    # baseline) skips by itself at setup on --target k8s, saying why. tests/test_targets.py runs
    # this selection on k8s and checks each of those skips and its reason.
    for env in ENVS:
        args = gitops._containers(one(rendered[env], "CronJob"))[0]["args"]
        narrowing = [a for a in args if a in ("-k", "--deselect", "--ignore") or "::" in a]
        assert narrowing == [], f"{env}'s nightly narrows its -m selection by hand: {narrowing} in {args}"


def test_nightly_role_is_what_a_run_asks_of_the_api(rendered):
    # Measured with a recording stand-in API server: a dev nightly (smoke, deploy and chaos on
    # --target k8s) made exactly GET /version and a pod list; nothing else, no write.
    for env in ENVS:
        assert one(rendered[env], "Role", "triton-gate-nightly")["rules"] == [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
        ]


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
    return one(objs, "Role", "triton-smoke")["rules"][0]


def _platform_cm(objs: List[Obj], text: str) -> None:
    one(objs, "ConfigMap", "gate-platform")["data"]["platform.yaml"] = text


def _platform_edit(objs: List[Obj], change: Callable[[dict], None]) -> None:
    manifest = yaml.safe_load(one(objs, "ConfigMap", "gate-platform")["data"]["platform.yaml"])
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
    "cronjob-misspelled-field": (
        lambda o: one(o, "CronJob")["spec"].update(concurencyPolicy="Forbid"),
        "concurencyPolicy",
    ),
    "cronjob-schedule-as-number": (lambda o: one(o, "CronJob")["spec"].update(schedule=17), "spec.schedule"),
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


# -- the nightly CronJob, broken on purpose --------------------------------------------------------


def _cron(objs: List[Obj]) -> Obj:
    return one(objs, "CronJob")


def _cron_pod(objs: List[Obj]) -> Obj:
    return gitops._pod_spec(_cron(objs))


def _cron_c(objs: List[Obj]) -> Obj:
    return gitops._containers(_cron(objs))[0]


def _cron_arg(objs: List[Obj], old: str, new: str) -> None:
    args = _cron_c(objs)["args"]
    args[args.index(old)] = new


def _cron_mount(objs: List[Obj], name: str, **change) -> None:
    next(m for m in _cron_c(objs)["volumeMounts"] if m["name"] == name).update(change)


def _cron_volume(objs: List[Obj], name: str) -> Obj:
    return next(v for v in _cron_pod(objs)["volumes"] if v["name"] == name)


def _nightly_role(objs: List[Obj]) -> dict:
    return one(objs, "Role", "triton-gate-nightly")["rules"][0]


def _nightly_manifest(objs: List[Obj], change: Callable[[dict], None]) -> None:
    cm = one(objs, "ConfigMap", "gate-nightly-platform")
    manifest = yaml.safe_load(cm["data"]["platform.yaml"])
    change(manifest)
    cm["data"]["platform.yaml"] = yaml.safe_dump(manifest)


NIGHTLY_BREAKAGES: Dict[str, tuple] = {
    # prod: smoke only, read-only, never destructive
    "prod-allow-destructive": (
        "prod",
        lambda o: _cron_c(o)["args"].append("--allow-destructive"),
        "--allow-destructive in protected prod: never on a schedule",
    ),
    "prod-deploy-markers": (
        "prod",
        lambda o: _cron_arg(o, "smoke", "smoke or deploy"),
        "runs -m 'smoke or deploy' in protected prod; expected -m smoke",
    ),
    "prod-chaos-markers": ("prod", lambda o: _cron_arg(o, "smoke", "chaos"), "runs -m 'chaos' in protected prod"),
    "prod-full-gate": (
        "prod",
        lambda o: [_cron_c(o)["args"].remove(a) for a in ("-m", "smoke")],
        "runs the full gate in protected prod",
    ),
    "prod-writable-repository-mount": (
        "prod",
        lambda o: [
            _cron_mount(o, "model-repository", readOnly=False),
            _cron_volume(o, "model-repository")["persistentVolumeClaim"].update(readOnly=False),
        ],
        "the model repository PVC 'triton-model-repository' is writable in protected prod",
    ),
    "prod-repository-mount-not-read-only": (
        "prod",
        lambda o: _cron_mount(o, "model-repository", readOnly=False),
        "is writable in protected prod",
    ),
    # dev: deploys need a writable repository and an MLflow
    "dev-deploys-on-a-read-only-repository": (
        "dev",
        lambda o: _cron_mount(o, "model-repository", readOnly=True),
        "runs deploy/chaos scenarios with the model repository read-only",
    ),
    "dev-manifest-without-registry": (
        "dev",
        lambda o: _nightly_manifest(o, lambda m: m.pop("registry")),
        "its manifest names no `registry: {mlflow_url}`",
    ),
    # RBAC: list pods, nothing more
    "nightly-role-can-create-pods": (
        "prod",
        lambda o: _nightly_role(o)["verbs"].append("create"),
        "Role/triton-prod/triton-gate-nightly: rules[0] grants write verbs ['create'] on pods",
    ),
    "nightly-role-can-delete-pods-in-dev": (
        "dev",
        lambda o: _nightly_role(o)["verbs"].append("delete"),
        "grants write verbs ['delete'] on pods",
    ),
    "nightly-role-watches": ("dev", lambda o: _nightly_role(o)["verbs"].append("watch"), "grants ['watch'] on pods"),
    "nightly-role-lists-secrets": (
        "dev",
        lambda o: _nightly_role(o)["resources"].append("secrets"),
        "grants ['list'] on secrets, beyond what the gate asks",
    ),
    "nightly-default-service-account": (
        "dev",
        lambda o: _cron_pod(o).update(serviceAccountName="default"),
        "serviceAccountName 'default' is not a ServiceAccount in 'triton-dev'",
    ),
    # schedule and limits
    "schedule-invalid-hour": (
        "dev",
        lambda o: _cron(o)["spec"].update(schedule="17 25 * * *"),
        "hour field '25' is not within 0-23",
    ),
    "schedule-with-seconds": ("dev", lambda o: _cron(o)["spec"].update(schedule="0 17 2 * * *"), "has 6 fields"),
    "concurrency-allowed": (
        "dev",
        lambda o: _cron(o)["spec"].update(concurrencyPolicy="Allow"),
        "concurrencyPolicy='Allow', expected 'Forbid'",
    ),
    "no-starting-deadline": (
        "dev",
        lambda o: _cron(o)["spec"].pop("startingDeadlineSeconds"),
        "startingDeadlineSeconds=None",
    ),
    "no-failed-history": (
        "prod",
        lambda o: _cron(o)["spec"].pop("failedJobsHistoryLimit"),
        "failedJobsHistoryLimit=None",
    ),
    "retries": ("dev", lambda o: gitops._job_spec(_cron(o)).update(backoffLimit=2), "backoffLimit=2, expected 0"),
    "unbounded": (
        "dev",
        lambda o: gitops._job_spec(_cron(o)).pop("activeDeadlineSeconds"),
        "activeDeadlineSeconds must bound the run",
    ),
    # the image and what it is given
    "other-image": ("dev", lambda o: _cron_c(o).update(image="python:3.11"), "expected the pinned gate image"),
    "unknown-option": (
        "prod",
        lambda o: _cron_arg(o, "--gate-reruns", "--gate-rerun"),
        "--gate-rerun is not an option of the gate",
    ),
    "targets-local": (
        "dev",
        lambda o: _cron_arg(o, "k8s", "local"),
        "expected pytest scenarios ... --target k8s",
    ),
    "history-on-tmp": (
        "dev",
        lambda o: _cron_arg(o, "/var/lib/gate/history.jsonl", "/tmp/history.jsonl"),
        "--history /tmp/history.jsonl is not on a writable PersistentVolumeClaim",
    ),
    "history-volume-read-only": (
        "prod",
        lambda o: _cron_mount(o, "history", readOnly=True),
        "--history /var/lib/gate/history.jsonl is not on a writable PersistentVolumeClaim",
    ),
    "reports-on-the-read-only-root": (
        "prod",
        lambda o: _cron_arg(o, "/tmp/gate-reports", "reports/out"),
        "--report-dir reports/out is not on a writable volume",
    ),
    "platform-not-mounted": (
        "dev",
        lambda o: _cron_arg(o, "/etc/gate/platform.yaml", "/opt/platform.yaml"),
        "--platform /opt/platform.yaml is not in a mounted ConfigMap",
    ),
    # hardening
    "runs-as-root": (
        "dev",
        lambda o: _cron_pod(o)["securityContext"].update(runAsUser=0, runAsNonRoot=False),
        "must run as non-root UID 10001",
    ),
    "privilege-escalation": (
        "prod",
        lambda o: _cron_c(o)["securityContext"].update(allowPrivilegeEscalation=True),
        "allowPrivilegeEscalation: false",
    ),
    "writable-root": (
        "prod",
        lambda o: _cron_c(o)["securityContext"].pop("readOnlyRootFilesystem"),
        "needs readOnlyRootFilesystem: true",
    ),
    "capabilities-kept": (
        "dev",
        lambda o: _cron_c(o)["securityContext"].update(capabilities={"add": ["SYS_ADMIN"]}),
        "expected drop: [ALL] and nothing added",
    ),
    "no-seccomp": (
        "dev",
        lambda o: _cron_pod(o)["securityContext"].pop("seccompProfile"),
        "seccompProfile None, expected RuntimeDefault",
    ),
    "no-tmp": (
        "prod",
        lambda o: _cron_c(o)["volumeMounts"].remove(next(m for m in _cron_c(o)["volumeMounts"] if m["name"] == "tmp")),
        "no emptyDir at /tmp",
    ),
}


@pytest.mark.parametrize("name", sorted(NIGHTLY_BREAKAGES))
def test_each_broken_nightly_is_caught(name, rendered, envs, platform, gate_image):
    env, breakage, expected = NIGHTLY_BREAKAGES[name]
    objects = copy.deepcopy(rendered[env])
    breakage(objects)
    problems = problems_of(objects, env, envs, platform, gate_image)
    assert any(expected in p for p in problems), f"{name}: expected a problem containing {expected!r}, got {problems}"


def test_prod_overlay_patched_into_a_destructive_nightly_is_caught(deploy_copy, envs, platform, gate_image):
    # The likely slip: dev's nightly patch copied into prod's overlay.
    prod = deploy_copy / "gitops" / "overlays" / "prod"
    shutil.copy(deploy_copy / "gitops" / "overlays" / "dev" / "nightly-patch.yaml", prod)
    text = (prod / "nightly-patch.yaml").read_text().replace("gate-nightly-platform", "gate-platform")
    (prod / "nightly-patch.yaml").write_text(text)
    edit_kustomization(prod / "kustomization.yaml", lambda doc: doc["patches"].append({"path": "nightly-patch.yaml"}))
    problems = problems_of(gitops.render(prod), "prod", envs, platform, gate_image)
    for expected in (
        "runs -m 'smoke or deploy or chaos' in protected prod",
        "--allow-destructive in protected prod",
        "the model repository PVC 'triton-model-repository' is writable in protected prod",
    ):
        assert any(expected in p for p in problems), f"{expected!r} not in {problems}"
