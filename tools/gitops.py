"""The GitOps reference (deploy/gitops) and the gate image's Dockerfile: render, validate, cross-check."""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import yaml

from suite.errors import GateError, PlatformError
from suite.platform import EnvironmentSpec, Platform, is_protected, load_platform
from suite.targets.guard import DESTRUCTIVE_MARKERS
from tools.gate_args import cron_problems, gate_options, markers_in, option_value, unknown_options

REPO_ROOT = Path(__file__).resolve().parent.parent
GITOPS_DIR = REPO_ROOT / "deploy" / "gitops"
# kubernetes-validate bundles schemas up to 1.37; 1.32 is the kubectl here and a common cluster.
KUBERNETES_VERSION = "1.32"
HOOK_ANNOTATIONS = {
    "argocd.argoproj.io/hook": "PostSync",
    "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation,HookSucceeded",
}
HOOK_ARGS = ("scenarios", "-m", "smoke", "--target", "k8s")
READ_ONLY_VERBS = frozenset({"get", "list", "watch"})
SMOKE_RESOURCES = frozenset({"pods", "services", "endpoints"})
# The nightly gate's UID: the gate image's USER (Dockerfile; tests/test_gitops.py holds them equal).
NIGHTLY_UID = 10001
# All a nightly run asks of the Kubernetes API besides /version (open to every account): the pod
# list of the smoke's pod check. Deploys and faults use Triton, MLflow and the mounted repository.
NIGHTLY_RULES: Dict[Tuple[str, str], frozenset] = {("", "pods"): frozenset({"list"})}
# Triton issue #7014: server-level ready answers 400 during every explicit reload.
SERVER_READY_PATH = "/v2/health/ready"

Obj = Dict[str, Any]


class GitOpsError(GateError):
    """Raised when kubectl or promtool is missing, or a kustomization cannot be rendered."""


@dataclass(frozen=True)
class EnvExpectation:
    """What one environment's overlay must say, taken from the platform manifest."""

    name: str
    namespace: str
    release: str
    alert_receiver: Optional[str] = None

    @classmethod
    def from_spec(cls, name: str, spec: EnvironmentSpec) -> "EnvExpectation":
        return cls(name, spec.namespace, spec.release, spec.alert_receiver)

    def tokens(self) -> List[str]:
        """Names that belong to this env alone; another env's objects must never mention them."""
        return [t for t in (self.namespace, self.release, self.alert_receiver) if t]


def expectations(platform: Platform) -> Dict[str, EnvExpectation]:
    return {name: EnvExpectation.from_spec(name, spec) for name, spec in platform.environments.items()}


# -- rendering ---------------------------------------------------------------------------------


def render(folder: Path, kubectl: Optional[str] = None, timeout: float = 60.0) -> List[Obj]:
    """Objects of `kubectl kustomize folder`, in order; what Argo CD applies for that path."""
    binary = kubectl or shutil.which("kubectl")
    if not binary:
        raise GitOpsError(
            "kubectl is not on PATH; the GitOps reference is rendered with "
            "`kubectl kustomize` (Helm is not used). Install kubectl >= 1.27."
        )
    proc = subprocess.run(
        [binary, "kustomize", str(folder)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise GitOpsError(f"`kubectl kustomize {folder}` failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def ref(obj: Obj) -> str:
    """`Kind/namespace/name` for messages."""
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')}/{where}{meta.get('name')}"


def of_kind(objects: Iterable[Obj], kind: str) -> List[Obj]:
    return [o for o in objects if o.get("kind") == kind]


def pinned_images(kustomization: Path) -> Dict[str, str]:
    """The `images:` of a kustomization as {short name: full reference}: where images are pinned."""
    doc = yaml.safe_load(kustomization.read_text()) or {}
    out: Dict[str, str] = {}
    for entry in doc.get("images") or []:
        name = entry.get("newName", entry["name"])
        out[entry["name"]] = (
            f"{name}@{entry['digest']}" if entry.get("digest") else f"{name}:{entry.get('newTag', 'latest')}"
        )
    return out


# -- schema validation -------------------------------------------------------------------------


def validate_schemas(objects: Iterable[Obj], version: str = KUBERNETES_VERSION) -> List[str]:
    """Problems of every object against the Kubernetes schemas (strict: unknown fields too).

    kubernetes-validate bundles only the built-in kinds. ServiceMonitor, PrometheusRule and
    Application are CRDs it has no schema for: their required structure is checked here by
    hand, and a kind with neither is a problem, so nothing passes unchecked.
    """
    import kubernetes_validate

    problems: List[str] = []
    for obj in objects:
        check = CRD_CHECKS.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
        if check is not None:
            problems += [f"{ref(obj)}: {p}" for p in check(obj)]
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
            problems.append(f"{ref(obj)}: schema {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                f"{ref(obj)}: no Kubernetes {version} schema for {obj.get('apiVersion')} "
                f"{obj.get('kind')} and no structural check in tools/gitops.py"
            )
    return problems


def _require(obj: Obj, dotted: str, kind: type) -> List[str]:
    node: Any = obj
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return [f"{dotted} is required"]
        node = node[part]
    if not isinstance(node, kind) or (kind in (str, list, dict) and not node):
        return [f"{dotted} must be a non-empty {kind.__name__}, got {node!r}"]
    return []


def _labels_selector(selector: Any) -> List[str]:
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return ["spec.selector needs matchLabels or matchExpressions (an empty selector matches every Service)"]
    return []


def check_service_monitor(obj: Obj) -> List[str]:
    """Required structure of a monitoring.coreos.com/v1 ServiceMonitor."""
    problems = _require(obj, "metadata.name", str) + _require(obj, "spec.selector", dict)
    problems += _require(obj, "spec.endpoints", list)
    if not problems:
        problems += _labels_selector(obj["spec"]["selector"])
        for i, ep in enumerate(obj["spec"]["endpoints"]):
            if not isinstance(ep, dict) or not (ep.get("port") or ep.get("targetPort")):
                problems.append(f"spec.endpoints[{i}] needs port (a Service port name) or targetPort")
    return problems


def check_prometheus_rule(obj: Obj) -> List[str]:
    """Required structure of a monitoring.coreos.com/v1 PrometheusRule (promtool checks the rest)."""
    problems = _require(obj, "metadata.name", str) + _require(obj, "spec.groups", list)
    for g, group in enumerate((obj.get("spec") or {}).get("groups") or []):
        if not isinstance(group, dict) or not group.get("name"):
            problems.append(f"spec.groups[{g}].name is required")
            continue
        for r, rule in enumerate(group.get("rules") or []):
            if not rule.get("expr"):
                problems.append(f"spec.groups[{g}].rules[{r}].expr is required")
            if bool(rule.get("alert")) == bool(rule.get("record")):
                problems.append(f"spec.groups[{g}].rules[{r}] needs exactly one of alert or record")
    return problems


def check_application(obj: Obj) -> List[str]:
    """Required structure of an argoproj.io/v1alpha1 Application."""
    problems = _require(obj, "metadata.name", str) + _require(obj, "spec.project", str)
    problems += _require(obj, "spec.destination", dict)
    spec = obj.get("spec") or {}
    dest = spec.get("destination") or {}
    if not (dest.get("server") or dest.get("name")):
        problems.append("spec.destination needs server or name")
    sources = [spec["source"]] if spec.get("source") else list(spec.get("sources") or [])
    if not sources:
        problems.append("spec.source (or spec.sources) is required")
    for i, source in enumerate(sources):
        if not source.get("repoURL"):
            problems.append(f"source[{i}].repoURL is required")
    return problems


CRD_CHECKS: Dict[Tuple[str, str], Callable[[Obj], List[str]]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
    ("argoproj.io/v1alpha1", "Application"): check_application,
}


def promtool_check_rules(rule: Obj, promtool: Optional[str] = None) -> List[str]:
    """`promtool check rules` on a PrometheusRule's spec, as Prometheus will load it."""
    binary = promtool or shutil.which("promtool")
    if not binary:
        raise GitOpsError(
            "promtool is not on PATH; install the Debian package `prometheus` "
            "(`make test` does) to check the rendered PrometheusRule."
        )
    with tempfile.TemporaryDirectory(prefix="gate-rules-") as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(yaml.safe_dump(rule.get("spec") or {}))
        proc = subprocess.run(
            [binary, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
    if proc.returncode != 0:
        return [f"{ref(rule)}: promtool check rules failed:\n{(proc.stdout + proc.stderr).strip()}"]
    return []


# -- cross-references of one environment's overlay ---------------------------------------------


def _job_spec(obj: Obj) -> Obj:
    """A Job's spec; for a CronJob, the spec of the Jobs it creates."""
    spec = obj.get("spec") or {}
    return ((spec.get("jobTemplate") or {}).get("spec") or {}) if obj.get("kind") == "CronJob" else spec


def _containers(obj: Obj) -> List[Obj]:
    return list(_pod_spec(obj).get("containers") or [])


def _pod_spec(obj: Obj) -> Obj:
    return (_job_spec(obj).get("template") or {}).get("spec") or {}


def _labels(obj: Obj) -> Dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _strings(node: Any) -> Iterator[str]:
    """Every string in an object, keys included, Secret data decoded: where an env name can hide."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def _decoded(obj: Obj) -> Obj:
    if obj.get("kind") != "Secret" or not obj.get("data"):
        return obj
    out = dict(obj)
    out["data"] = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in obj["data"].items()}
    return out


def _mentions(text: str, token: str) -> bool:
    # Whole names only: `triton-prod` must not match inside `triton-prod-canary` or `xtriton-prod`.
    return re.search(rf"(?<![\w-]){re.escape(token)}(?![\w-])", text) is not None


def check_isolation(objects: Sequence[Obj], env: EnvExpectation, others: Sequence[EnvExpectation]) -> List[str]:
    """Every object in the env's namespaces with the env's release; no other env's name anywhere."""
    problems: List[str] = []
    allowed = {env.namespace, env.release}  # release = the monitoring stack's namespace (seed layout)
    for obj in objects:
        namespace = (obj.get("metadata") or {}).get("namespace")
        if namespace not in allowed:
            problems.append(
                f"{ref(obj)}: namespace {namespace!r}, expected {env.namespace!r} "
                f"(or the monitoring namespace {env.release!r})"
            )
        release = _labels(obj).get("release")
        if release != env.release:
            problems.append(
                f"{ref(obj)}: label release={release!r}, expected {env.release!r}: the "
                f"{env.name} monitoring stack selects by it, another env's would scrape it"
            )
        for other in others:
            for token in other.tokens():
                hits = [s for s in _strings(_decoded(obj)) if _mentions(s, token)]
                if hits:
                    problems.append(
                        f"{ref(obj)}: mentions {other.name}'s {token!r} in the {env.name} "
                        f"overlay (e.g. {hits[0][:80]!r})"
                    )
    for kind in ("ServiceMonitor", "PrometheusRule"):
        if not of_kind(objects, kind):
            problems.append(f"no {kind} in the {env.name} overlay")
    return problems


def _selects(selector: Dict[str, str], labels: Dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_service_monitors(objects: Sequence[Obj], env: EnvExpectation) -> List[str]:
    """Each ServiceMonitor selects a Service in its namespace on a port that Service has."""
    problems: List[str] = []
    for sm in of_kind(objects, "ServiceMonitor"):
        spec = sm.get("spec") or {}
        names = ((spec.get("namespaceSelector") or {}).get("matchNames")) or []
        if (spec.get("namespaceSelector") or {}).get("any") or any(n != env.namespace for n in names):
            problems.append(
                f"{ref(sm)}: namespaceSelector reaches beyond {env.namespace!r}: {spec['namespaceSelector']}"
            )
        if (spec.get("selector") or {}).get("matchExpressions"):
            problems.append(f"{ref(sm)}: matchExpressions are not cross-checked here; use matchLabels")
        wanted = dict((spec.get("selector") or {}).get("matchLabels") or {})
        ns = (sm.get("metadata") or {}).get("namespace")
        services = [
            s
            for s in of_kind(objects, "Service")
            if (s.get("metadata") or {}).get("namespace") == ns and _selects(wanted, _labels(s))
        ]
        if not services:
            problems.append(
                f"{ref(sm)}: selects Service labels {wanted}, but no Service in {ns!r} has them "
                f"(Services: {[(ref(s), _labels(s)) for s in of_kind(objects, 'Service')]})"
            )
            continue
        for service in services:
            ports = {p.get("name") for p in (service.get("spec") or {}).get("ports") or []}
            for ep in spec.get("endpoints") or []:
                if ep.get("port") and ep["port"] not in ports:
                    problems.append(
                        f"{ref(sm)}: endpoint port {ep['port']!r} is not a port of "
                        f"{ref(service)} (ports: {sorted(p for p in ports if p)})"
                    )
    return problems


def _flag(args: Sequence[str], name: str) -> Optional[str]:
    for arg in args:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def check_triton(objects: Sequence[Obj], model: str) -> List[str]:
    """The Triton Deployment: explicit mode, the model loaded at start, probes, a Service in front."""
    problems: List[str] = []
    deployments = of_kind(objects, "Deployment")
    if not deployments:
        return ["no Deployment for Triton"]
    for dep in deployments:
        for c in _containers(dep):
            args = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
            if "tritonserver" not in " ".join(args):
                continue
            if _flag(args, "--model-control-mode") != "explicit":
                problems.append(f"{ref(dep)}: tritonserver needs --model-control-mode=explicit, got {args}")
            if _flag(args, "--load-model") != model:
                problems.append(
                    f"{ref(dep)}: --load-model={_flag(args, '--load-model')!r}, expected {model!r} "
                    f"(without it a restarted pod serves no model)"
                )
            repo = _flag(args, "--model-repository")
            mounts = {m.get("mountPath"): m for m in c.get("volumeMounts") or []}
            if repo not in mounts:
                problems.append(f"{ref(dep)}: --model-repository={repo!r} is not a volume mount ({sorted(mounts)})")
            else:
                volume = _volume(dep, mounts[repo]["name"])
                if not (volume or {}).get("persistentVolumeClaim"):
                    problems.append(f"{ref(dep)}: the model repository {repo} is not on a PVC")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if not c.get(probe):
                    problems.append(f"{ref(dep)}: container {c.get('name')} has no {probe}")
            ready = ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
            if ready == SERVER_READY_PATH:
                problems.append(
                    f"{ref(dep)}: readinessProbe on {SERVER_READY_PATH}, which answers 400 "
                    f"during every reload (Triton #7014) and drops the pod from its Service; "
                    f"probe /v2/models/{model}/ready"
                )
            elif ready and ready != f"/v2/models/{model}/ready":
                problems.append(f"{ref(dep)}: readinessProbe on {ready!r}, expected /v2/models/{model}/ready")
            break
        else:
            problems.append(f"{ref(dep)}: no container runs tritonserver")
        pod_labels = dict(((dep.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {})
        if not any(
            _selects((s.get("spec") or {}).get("selector") or {}, pod_labels) for s in of_kind(objects, "Service")
        ):
            problems.append(f"{ref(dep)}: no Service selects its pods (labels {pod_labels})")
    return problems


def _volume(workload: Obj, name: str) -> Optional[Obj]:
    return next((v for v in _pod_spec(workload).get("volumes") or [] if v.get("name") == name), None)


def check_volumes(objects: Sequence[Obj]) -> List[str]:
    """Every PVC and ConfigMap a Deployment, Job or CronJob mounts exists in its namespace."""
    problems: List[str] = []
    existing = {(o["kind"], (o.get("metadata") or {}).get("namespace"), o["metadata"]["name"]) for o in objects}
    for workload in of_kind(objects, "Deployment") + of_kind(objects, "Job") + of_kind(objects, "CronJob"):
        ns = (workload.get("metadata") or {}).get("namespace")
        for volume in _pod_spec(workload).get("volumes") or []:
            for kind, key, name_key in (
                ("PersistentVolumeClaim", "persistentVolumeClaim", "claimName"),
                ("ConfigMap", "configMap", "name"),
                ("Secret", "secret", "secretName"),
            ):
                if key in volume and (kind, ns, volume[key].get(name_key)) not in existing:
                    problems.append(
                        f"{ref(workload)}: volume {volume['name']!r} names {kind} "
                        f"{volume[key].get(name_key)!r}, which is not in {ns!r}"
                    )
        mounted = {v.get("name") for v in _pod_spec(workload).get("volumes") or []}
        for c in _containers(workload):
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in mounted:
                    problems.append(f"{ref(workload)}: mounts volume {m.get('name')!r}, which the pod does not define")
    return problems


def check_hook(
    objects: Sequence[Obj],
    env: EnvExpectation,
    model: str,
    gate_image: str,
    reference: Optional[EnvironmentSpec] = None,
) -> List[str]:
    """The PostSync smoke Job: hook annotations, fail-fast limits, image, command, mounts, manifest."""
    jobs = [
        j
        for j in of_kind(objects, "Job")
        if ((j.get("metadata") or {}).get("annotations") or {}).get("argocd.argoproj.io/hook")
    ]
    if len(jobs) != 1:
        return [f"expected exactly one Argo CD hook Job, found {[ref(j) for j in jobs]}"]
    job = jobs[0]
    problems: List[str] = []
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    for key, value in HOOK_ANNOTATIONS.items():
        if annotations.get(key) != value:
            problems.append(f"{ref(job)}: annotation {key}={annotations.get(key)!r}, expected {value!r}")
    spec = job.get("spec") or {}
    if spec.get("backoffLimit") != 0:
        problems.append(
            f"{ref(job)}: backoffLimit={spec.get('backoffLimit')!r}, expected 0 "
            f"(a retried smoke can turn a failing platform green)"
        )
    if not isinstance(spec.get("activeDeadlineSeconds"), int) or spec["activeDeadlineSeconds"] <= 0:
        problems.append(
            f"{ref(job)}: activeDeadlineSeconds must bound the run, got {spec.get('activeDeadlineSeconds')!r}"
        )
    pod = _pod_spec(job)
    if pod.get("restartPolicy") != "Never":
        problems.append(f"{ref(job)}: restartPolicy={pod.get('restartPolicy')!r}, expected 'Never'")
    containers = _containers(job)
    if len(containers) != 1:
        return problems + [f"{ref(job)}: expected one container (the gate), found {len(containers)}"]
    c = containers[0]
    if c.get("image") != gate_image:
        problems.append(f"{ref(job)}: image {c.get('image')!r}, expected the gate image {gate_image!r}")
    args, wrong_command = _pytest_args(job, c)
    problems += wrong_command
    if tuple(args[: len(HOOK_ARGS)]) != HOOK_ARGS:
        problems.append(f"{ref(job)}: runs pytest {' '.join(args)}, expected pytest {' '.join(HOOK_ARGS)} ...")
    if "--platform" not in args or args.index("--platform") + 1 >= len(args):
        return problems + [f"{ref(job)}: no --platform argument: the hook must say which manifest it checks"]
    problems += _check_mounted_manifest(objects, job, c, args[args.index("--platform") + 1], env, model, reference)
    mounts = {m.get("name"): m for m in c.get("volumeMounts") or []}
    for volume in pod.get("volumes") or []:
        if "persistentVolumeClaim" in volume:
            mount = mounts.get(volume["name"])
            if not (volume["persistentVolumeClaim"].get("readOnly") and mount and mount.get("readOnly")):
                problems.append(
                    f"{ref(job)}: PVC {volume['persistentVolumeClaim'].get('claimName')!r} must be "
                    f"mounted read-only (volume and volumeMount readOnly: true)"
                )
    if not any("persistentVolumeClaim" in v for v in pod.get("volumes") or []):
        problems.append(f"{ref(job)}: does not mount the model repository PVC")
    problems += _check_service_account(objects, job, pod.get("serviceAccountName"))
    return problems


def _check_mounted_manifest(
    objects: Sequence[Obj],
    job: Obj,
    container: Obj,
    path: str,
    env: EnvExpectation,
    model: str,
    reference: Optional[EnvironmentSpec],
) -> List[str]:
    cm, platform, problem = mounted_manifest(objects, job, container, path)
    if problem or cm is None or platform is None:
        return [problem or f"{ref(job)}: --platform {path}: no manifest"]
    problems: List[str] = []
    if platform.model.name != model:
        problems.append(f"{ref(cm)}: manifest model {platform.model.name!r}, but Triton loads {model!r}")
    if sorted(platform.environments) != [env.name]:
        problems.append(
            f"{ref(cm)}: manifest environments {sorted(platform.environments)}, expected only "
            f"{env.name!r} (the hook's Role sees only {env.namespace})"
        )
    spec = platform.environments.get(env.name)
    if spec is not None:
        seen = EnvExpectation.from_spec(env.name, spec)
        if (seen.namespace, seen.release) != (env.namespace, env.release):
            problems.append(f"{ref(cm)}: manifest says {seen}, expected {env}")
        if reference is not None and spec.alert_receiver != reference.alert_receiver:
            problems.append(
                f"{ref(cm)}: alert_receiver {spec.alert_receiver!r}, the reference platform says "
                f"{reference.alert_receiver!r}"
            )
        problems += _check_cluster_endpoints(objects, job, container, cm, spec, env)
    return problems


def _pytest_args(workload: Obj, container: Obj) -> Tuple[List[str], List[str]]:
    """What the gate image's pytest is given (its entrypoint, or a `command: [pytest, ...]`)."""
    command = list(container.get("command") or [])
    args = [str(a) for a in command[1:] + list(container.get("args") or [])]
    if command and command[0] not in ("pytest",):
        return args, [f"{ref(workload)}: command {command!r}: the gate image runs pytest"]
    return args, []


def _mount_of(container: Obj, path: str) -> Optional[Obj]:
    """The volumeMount a path lies under (the deepest one)."""
    mounts = [
        m
        for m in container.get("volumeMounts") or []
        if (path + "/").startswith(str(m.get("mountPath", "")).rstrip("/") + "/")
    ]
    return max(mounts, key=lambda m: len(str(m.get("mountPath", ""))), default=None)


def mounted_manifest(
    objects: Sequence[Obj], workload: Obj, container: Obj, path: str
) -> Tuple[Optional[Obj], Optional[Platform], Optional[str]]:
    """The ConfigMap holding `--platform path` and the manifest loaded from it, or why not."""
    mount = _mount_of(container, path)
    volume = _volume(workload, mount["name"]) if mount and mount.get("mountPath") != path else None
    if not volume or "configMap" not in volume:
        return None, None, f"{ref(workload)}: --platform {path} is not in a mounted ConfigMap"
    ns = (workload.get("metadata") or {}).get("namespace")
    cm = next(
        (
            o
            for o in of_kind(objects, "ConfigMap")
            if o["metadata"]["name"] == volume["configMap"]["name"] and o["metadata"].get("namespace") == ns
        ),
        None,
    )
    key = path[len(str(mount["mountPath"]).rstrip("/")) + 1 :]
    if cm is None or key not in (cm.get("data") or {}):
        problem = f"{ref(workload)}: --platform {path}: ConfigMap {volume['configMap']['name']!r} has no key {key!r}"
        return None, None, problem
    with tempfile.TemporaryDirectory(prefix="gate-platform-") as tmp:
        manifest = Path(tmp) / "platform.yaml"
        manifest.write_text(cm["data"][key])
        try:
            return cm, load_platform(manifest), None
        except PlatformError as exc:
            return cm, None, f"{ref(cm)}: the hook's platform manifest is not valid for the gate: {exc}"


def _check_cluster_endpoints(
    objects: Sequence[Obj], job: Obj, container: Obj, cm: Obj, spec: EnvironmentSpec, env: EnvExpectation
) -> List[str]:
    """The manifest's `cluster:` names the Service, pods and mount this overlay really has."""
    cluster = spec.cluster
    if cluster is None:
        return [f"{ref(cm)}: environment {env.name!r} has no `cluster:` section; --target k8s needs it"]
    problems: List[str] = []
    url = urlsplit(cluster.triton_url)
    host = (url.hostname or "").split(".")
    service, namespace = host[0], host[1] if len(host) > 1 else env.namespace
    port = url.port or (443 if url.scheme == "https" else 80)
    services = [
        s
        for s in of_kind(objects, "Service")
        if s["metadata"]["name"] == service and s["metadata"].get("namespace") == namespace
    ]
    if not services:
        problems.append(
            f"{ref(cm)}: triton_url {cluster.triton_url} names Service {service!r} in "
            f"{namespace!r}, which this overlay does not define"
        )
    elif port not in {p.get("port") for p in services[0]["spec"].get("ports") or []}:
        problems.append(f"{ref(cm)}: triton_url {cluster.triton_url}: port {port} is not a port of {ref(services[0])}")
    for name in ("prometheus_url", "alertmanager_url"):
        value = getattr(cluster, name)
        parts = (urlsplit(value).hostname or "").split(".") if value else []
        if len(parts) > 1 and parts[1] not in (env.namespace, env.release):
            problems.append(f"{ref(cm)}: {name} {value} is in namespace {parts[1]!r}, not {env.name}'s {env.release!r}")
    selector = dict(pair.split("=", 1) for pair in cluster.pod_selector.split(",") if "=" in pair)
    pods = [
        ((d.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        for d in of_kind(objects, "Deployment")
    ]
    if not any(_selects(selector, labels) for labels in pods):
        problems.append(
            f"{ref(cm)}: pod_selector {cluster.pod_selector!r} selects no Deployment's pods (pod labels: {pods})"
        )
    pvc_mounts = [
        m.get("mountPath")
        for m in container.get("volumeMounts") or []
        if "persistentVolumeClaim" in (_volume(job, m.get("name", "")) or {})
    ]
    if cluster.model_repository not in pvc_mounts:
        problems.append(
            f"{ref(cm)}: model_repository {cluster.model_repository!r} is not where the hook "
            f"mounts the model repository PVC ({pvc_mounts})"
        )
    return problems


def _check_service_account(objects: Sequence[Obj], job: Obj, account: Optional[str]) -> List[str]:
    ns = (job.get("metadata") or {}).get("namespace")
    if not account or not any(
        o["metadata"]["name"] == account and o["metadata"].get("namespace") == ns
        for o in of_kind(objects, "ServiceAccount")
    ):
        return [
            f"{ref(job)}: serviceAccountName {account!r} is not a ServiceAccount in {ns!r} "
            f"(the default account may hold more rights than the smoke needs)"
        ]
    problems: List[str] = []
    bindings = [
        b
        for b in of_kind(objects, "RoleBinding")
        if any(
            s.get("kind") == "ServiceAccount" and s.get("name") == account and s.get("namespace", ns) == ns
            for s in b.get("subjects") or []
        )
    ]
    if not bindings:
        problems.append(f"{ref(job)}: no RoleBinding grants ServiceAccount {account!r} anything")
    for b in bindings:
        role_ref = b.get("roleRef") or {}
        if role_ref.get("kind") != "Role" or not any(
            r["metadata"]["name"] == role_ref.get("name") and r["metadata"].get("namespace") == ns
            for r in of_kind(objects, "Role")
        ):
            problems.append(
                f"{ref(b)}: binds {role_ref.get('kind')} {role_ref.get('name')!r}; expected a "
                f"Role in {ns!r} defined here"
            )
    return problems


def check_rbac(objects: Sequence[Obj]) -> List[str]:
    """Read-only, namespaced RBAC: get/list/watch on pods, services, endpoints, nothing more."""
    problems = [
        f"{ref(o)}: cluster-wide RBAC in an env overlay; the smoke hook needs only its namespace"
        for o in objects
        if o.get("kind") in ("ClusterRole", "ClusterRoleBinding")
    ]
    for role in of_kind(objects, "Role"):
        for i, rule in enumerate(role.get("rules") or []):
            verbs = set(rule.get("verbs") or [])
            resources = set(rule.get("resources") or [])
            if not verbs <= READ_ONLY_VERBS:
                problems.append(
                    f"{ref(role)}: rules[{i}] grants {sorted(verbs - READ_ONLY_VERBS)}; "
                    f"only {sorted(READ_ONLY_VERBS)} are allowed"
                )
            if not resources <= SMOKE_RESOURCES:
                problems.append(
                    f"{ref(role)}: rules[{i}] covers {sorted(resources - SMOKE_RESOURCES)}; "
                    f"only {sorted(SMOKE_RESOURCES)} are needed"
                )
            if set(rule.get("apiGroups") or []) != {""} or rule.get("resourceNames") == ["*"]:
                problems.append(f"{ref(role)}: rules[{i}] apiGroups {rule.get('apiGroups')!r}, expected [''] (core)")
    return problems


# -- the nightly gate (CronJob) -------------------------------------------------------------------


def check_nightly(
    objects: Sequence[Obj],
    env: EnvExpectation,
    model: str,
    gate_image: str,
    reference: Optional[EnvironmentSpec] = None,
    known_options: Optional[Collection[str]] = None,
) -> List[str]:
    """The nightly gate CronJob: schedule and limits, hardening, real gate options, and a scope that
    fits the env: prod smoke-only on a read-only repository, dev's deploys on a writable one."""
    cronjobs = of_kind(objects, "CronJob")
    if len(cronjobs) != 1:
        return [f"expected exactly one nightly gate CronJob, found {[ref(c) for c in cronjobs]}"]
    cron = cronjobs[0]
    problems = _check_cron_schedule(cron) + _check_cron_job(cron)
    containers = _containers(cron)
    if len(containers) != 1:
        return problems + [f"{ref(cron)}: expected one container (the gate), found {len(containers)}"]
    c = containers[0]
    if c.get("image") != gate_image:
        problems.append(f"{ref(cron)}: image {c.get('image')!r}, expected the pinned gate image {gate_image!r}")
    problems += _check_hardening(cron, c)
    args, wrong_command = _pytest_args(cron, c)
    known = gate_options() if known_options is None else known_options
    problems += wrong_command + _check_nightly_args(cron, c, args, known)
    path = option_value(args, "--platform")
    if path is None:
        return problems + [f"{ref(cron)}: no --platform argument: the nightly must say which manifest it checks"]
    problems += _check_mounted_manifest(objects, cron, c, path, env, model, reference)
    _, platform, _ = mounted_manifest(objects, cron, c, path)
    specs = [s for s in (reference, platform.environments.get(env.name) if platform else None) if s is not None]
    protected = any(is_protected(env.name, s) for s in specs)
    problems += _check_nightly_scope(objects, cron, c, args, env, protected, platform)
    account = _pod_spec(cron).get("serviceAccountName")
    return problems + _check_service_account(objects, cron, account) + _check_nightly_role(objects, cron, account)


def _check_cron_schedule(cron: Obj) -> List[str]:
    spec = cron.get("spec") or {}
    problems = [f"{ref(cron)}: {p}" for p in cron_problems(spec.get("schedule"))]
    if spec.get("concurrencyPolicy") != "Forbid":
        problems.append(
            f"{ref(cron)}: concurrencyPolicy={spec.get('concurrencyPolicy')!r}, expected 'Forbid' "
            f"(two gates on one env race on its repository and history)"
        )
    if not isinstance(spec.get("startingDeadlineSeconds"), int) or spec["startingDeadlineSeconds"] <= 0:
        problems.append(
            f"{ref(cron)}: startingDeadlineSeconds={spec.get('startingDeadlineSeconds')!r}: a missed night "
            f"must not start at any hour"
        )
    for limit in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        if not isinstance(spec.get(limit), int) or spec[limit] < (1 if limit.startswith("failed") else 0):
            problems.append(f"{ref(cron)}: {limit}={spec.get(limit)!r}: keep a bounded number of runs (failed: >= 1)")
    return problems


def _check_cron_job(cron: Obj) -> List[str]:
    spec = _job_spec(cron)
    problems = []
    if spec.get("backoffLimit") != 0:
        problems.append(
            f"{ref(cron)}: backoffLimit={spec.get('backoffLimit')!r}, expected 0 (a retried gate can turn a "
            f"failing platform green)"
        )
    if not isinstance(spec.get("activeDeadlineSeconds"), int) or spec["activeDeadlineSeconds"] <= 0:
        problems.append(
            f"{ref(cron)}: activeDeadlineSeconds must bound the run, got {spec.get('activeDeadlineSeconds')!r}"
        )
    if _pod_spec(cron).get("restartPolicy") != "Never":
        problems.append(f"{ref(cron)}: restartPolicy={_pod_spec(cron).get('restartPolicy')!r}, expected 'Never'")
    return problems


def _check_hardening(workload: Obj, c: Obj) -> List[str]:
    """Non-root as the image's user, no privilege, read-only root, no capabilities, seccomp, /tmp."""
    pod_sc = _pod_spec(workload).get("securityContext") or {}
    sc = c.get("securityContext") or {}
    problems = []
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True or user != NIGHTLY_UID:
        problems.append(
            f"{ref(workload)}: must run as non-root UID {NIGHTLY_UID} (runAsNonRoot: true), runs as {user!r}"
        )
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        problems.append(f"{ref(workload)}: seccompProfile {seccomp!r}, expected RuntimeDefault")
    if sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
        problems.append(f"{ref(workload)}: container gate needs allowPrivilegeEscalation: false and no privileged")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{ref(workload)}: container gate needs readOnlyRootFilesystem: true")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
        problems.append(f"{ref(workload)}: capabilities {caps}, expected drop: [ALL] and nothing added")
    tmp = _mount_of(c, "/tmp")
    if not tmp or tmp.get("mountPath") != "/tmp" or "emptyDir" not in (_volume(workload, tmp["name"]) or {}):
        problems.append(f"{ref(workload)}: no emptyDir at /tmp: with a read-only root the gate has no scratch space")
    return problems


def _writable(workload: Obj, c: Obj, path: str) -> Optional[Obj]:
    """The volume a path is on when the container may write there, else None (the root is read-only)."""
    mount = _mount_of(c, path)
    volume = _volume(workload, mount["name"]) if mount else None
    if not volume or mount.get("readOnly") or (volume.get("persistentVolumeClaim") or {}).get("readOnly"):
        return None
    return volume if ("emptyDir" in volume or "persistentVolumeClaim" in volume) else None


def _check_nightly_args(cron: Obj, c: Obj, args: List[str], known: Collection[str]) -> List[str]:
    problems = [f"{ref(cron)}: {name} is not an option of the gate" for name in unknown_options(args, known)]
    if args[:1] != ["scenarios"] or option_value(args, "--target") != "k8s":
        problems.append(f"{ref(cron)}: runs pytest {' '.join(args)}, expected pytest scenarios ... --target k8s")
    history = option_value(args, "--history")
    volume = _writable(cron, c, history) if history else None
    if history is None or not volume or "persistentVolumeClaim" not in volume:
        problems.append(
            f"{ref(cron)}: --history {history} is not on a writable PersistentVolumeClaim: the next night "
            f"would start a new history"
        )
    reports = option_value(args, "--report-dir")
    if reports is None or not _writable(cron, c, reports):
        problems.append(f"{ref(cron)}: --report-dir {reports} is not on a writable volume (the root is read-only)")
    return problems


def _repository_claims(objects: Sequence[Obj]) -> set:
    """The PVCs Triton serves its model repository from."""
    return {
        v["persistentVolumeClaim"].get("claimName")
        for d in of_kind(objects, "Deployment")
        for v in _pod_spec(d).get("volumes") or []
        if "persistentVolumeClaim" in v
    }


def _check_nightly_scope(
    objects: Sequence[Obj],
    cron: Obj,
    c: Obj,
    args: List[str],
    env: EnvExpectation,
    protected: bool,
    platform: Optional[Platform],
) -> List[str]:
    markers = option_value(args, "-m")
    destructive = markers is None or bool(markers_in(markers) & set(DESTRUCTIVE_MARKERS))
    mounts = {m.get("name"): m for m in c.get("volumeMounts") or []}
    repository = [
        (v, mounts.get(v["name"]))
        for v in _pod_spec(cron).get("volumes") or []
        if (v.get("persistentVolumeClaim") or {}).get("claimName") in _repository_claims(objects)
    ]
    if not repository or not all(m for _, m in repository):
        return [f"{ref(cron)}: does not mount the model repository PVC (current.json is read there)"]
    writable = [v["persistentVolumeClaim"]["claimName"] for v, m in repository if _writable(cron, c, m["mountPath"])]
    # As the hook's: read-only on both the volume and its mount, so neither alone can be flipped.
    not_read_only = [
        v["persistentVolumeClaim"]["claimName"]
        for v, m in repository
        if not (v["persistentVolumeClaim"].get("readOnly") and m.get("readOnly"))
    ]
    problems = []
    if protected:
        if markers != "smoke":
            problems.append(
                f"{ref(cron)}: runs {'the full gate' if markers is None else f'-m {markers!r}'} in protected "
                f"{env.name}; expected -m smoke (deploy and chaos scenarios change what {env.name} serves)"
            )
        if "--allow-destructive" in args:
            problems.append(f"{ref(cron)}: --allow-destructive in protected {env.name}: never on a schedule")
        problems += [
            f"{ref(cron)}: the model repository PVC {claim!r} is writable in protected {env.name}; mount it "
            f"read-only (volume and volumeMount readOnly: true)"
            for claim in not_read_only
        ]
        return problems
    if destructive and not writable:
        problems.append(
            f"{ref(cron)}: runs deploy/chaos scenarios with the model repository read-only: every deploy "
            f"would fail to write it"
        )
    if destructive and platform is not None and platform.spec.registry is None:
        problems.append(
            f"{ref(cron)}: runs deploy/chaos scenarios, but its manifest names no `registry: {{mlflow_url}}`: "
            f"on --target k8s deploys come from the platform's MLflow"
        )
    return problems


def _check_nightly_role(objects: Sequence[Obj], cron: Obj, account: Optional[str]) -> List[str]:
    """The nightly's Role grants what a run asks of the API (list pods) and nothing more."""
    ns = (cron.get("metadata") or {}).get("namespace")
    roles = {
        (b.get("roleRef") or {}).get("name")
        for b in of_kind(objects, "RoleBinding")
        if any(s.get("kind") == "ServiceAccount" and s.get("name") == account for s in b.get("subjects") or [])
    }
    problems = []
    for role in of_kind(objects, "Role"):
        if role["metadata"]["name"] not in roles or role["metadata"].get("namespace") != ns:
            continue
        for i, rule in enumerate(role.get("rules") or []):
            for group in rule.get("apiGroups") or [""]:
                for resource in rule.get("resources") or []:
                    extra = set(rule.get("verbs") or []) - NIGHTLY_RULES.get((group, resource), frozenset())
                    writes = sorted(extra - READ_ONLY_VERBS)
                    if writes:
                        problems.append(
                            f"{ref(role)}: rules[{i}] grants write verbs {writes} on {resource}; a nightly run "
                            f"never writes through the Kubernetes API (deploys go through Triton, MLflow, the PVC)"
                        )
                    if extra & READ_ONLY_VERBS:
                        problems.append(
                            f"{ref(role)}: rules[{i}] grants {sorted(extra & READ_ONLY_VERBS)} on {resource}, "
                            f"beyond what the gate asks (list pods)"
                        )
    return problems


def cross_check(
    objects: Sequence[Obj],
    env: EnvExpectation,
    others: Sequence[EnvExpectation],
    model: str,
    gate_image: str,
    reference: Optional[EnvironmentSpec] = None,
    known_options: Optional[Collection[str]] = None,
) -> List[str]:
    """Every cross-reference of one env's rendered overlay; [] when consistent. `known_options`:
    the gate's options (default: `pytest scenarios --help`)."""
    return (
        check_isolation(objects, env, others)
        + check_service_monitors(objects, env)
        + check_triton(objects, model)
        + check_volumes(objects)
        + check_hook(objects, env, model, gate_image, reference)
        + check_rbac(objects)
        + check_nightly(objects, env, model, gate_image, reference, known_options)
    )


def check_applications(
    objects: Sequence[Obj], envs: Dict[str, EnvExpectation], repo_root: Path = REPO_ROOT
) -> List[str]:
    """One Argo CD Application per env, pointing at that env's overlay and namespace."""
    problems: List[str] = []
    apps = of_kind(objects, "Application")
    for name, env in envs.items():
        mine = [a for a in apps if (a.get("spec") or {}).get("destination", {}).get("namespace") == env.namespace]
        if len(mine) != 1:
            problems.append(f"expected one Application deploying to {env.namespace!r}, found {[ref(a) for a in mine]}")
            continue
        source = (mine[0].get("spec") or {}).get("source") or {}
        path = str(source.get("path", ""))
        if Path(path).name != name or not (repo_root / path / "kustomization.yaml").is_file():
            problems.append(
                f"{ref(mine[0])}: source.path {path!r} is not the {name} overlay "
                f"(expected a kustomization at {repo_root.name}/…/overlays/{name})"
            )
            continue
        overlay_namespaces = {(o.get("metadata") or {}).get("namespace") for o in render(repo_root / path)}
        if env.namespace not in overlay_namespaces:
            problems.append(
                f"{ref(mine[0])}: {path} renders into {sorted(n for n in overlay_namespaces if n)}, "
                f"not {env.namespace!r}"
            )
    return problems


# -- the gate image ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


def dockerfile_instructions(path: Path) -> List[Instruction]:
    """Instructions of a Dockerfile, continuation lines joined, comments dropped."""
    out: List[Instruction] = []
    pending: List[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction are skipped by Docker too
        if not pending:
            start = number
        pending.append(line[:-1].strip() if line.endswith("\\") else line)
        if not line.endswith("\\"):
            keyword, _, value = " ".join(pending).partition(" ")
            out.append(Instruction(keyword.upper(), value.strip(), start))
            pending = []
    return out


def dockerignore_patterns(path: Path) -> List[str]:
    if not path.is_file():
        return []
    return [
        line.strip().rstrip("/")
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def is_dockerignored(relative: str, patterns: Sequence[str]) -> bool:
    """Whether `relative` (or a folder above it) matches a .dockerignore pattern (no `!` rules)."""
    parts = Path(relative).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        bare = pattern[3:] if pattern.startswith("**/") else pattern
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(Path(prefix).name, bare)
            ):
                return True
    return False


def dockerfile_user(instructions: Sequence[Instruction]) -> Optional[str]:
    users = [i.value for i in instructions if i.keyword == "USER"]
    return users[-1] if users else None


def _exec_form(value: str) -> Optional[List[str]]:
    # Shell form (`ENTRYPOINT pytest`) runs under /bin/sh, which swallows signals and args.
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) else None


def check_dockerfile(dockerfile: Path, context: Path) -> List[str]:
    """What can be checked without a Docker engine: inputs exist, non-root, pytest, the lock first."""
    instructions = dockerfile_instructions(dockerfile)
    ignored = dockerignore_patterns(context / ".dockerignore")
    problems: List[str] = []
    for ins in instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        words = [w for w in ins.value.split() if not w.startswith("--")]
        if any(w.startswith("--from") for w in ins.value.split()):
            continue  # from another stage, not the build context
        for source in words[:-1]:
            if any(c in source for c in "*?["):
                continue  # a pattern may match nothing, as long as another source exists
            if not (context / source).exists():
                problems.append(f"line {ins.line}: {ins.keyword} {source}: not in the build context {context}")
            elif is_dockerignored(source.rstrip("/"), ignored):
                problems.append(f"line {ins.line}: {ins.keyword} {source}: excluded by .dockerignore")
    user = dockerfile_user(instructions)
    if user is None or not user.split(":")[0].isdigit() or int(user.split(":")[0]) == 0:
        problems.append(
            f"USER is {user!r}; expected a numeric non-root UID (runAsNonRoot can only verify a numeric one)"
        )
    entry = [i for i in instructions if i.keyword == "ENTRYPOINT"]
    if not entry or _exec_form(entry[-1].value) != ["pytest"]:
        problems.append(f'ENTRYPOINT is {entry[-1].value if entry else None!r}; expected ["pytest"] (exec form)')
    runs = " && ".join(i.value for i in instructions if i.keyword == "RUN")
    lock, own = runs.find("pip install -r"), runs.find("pip install --no-deps .")
    if lock < 0 or own < 0 or lock > own:
        problems.append("expected `pip install -r` of requirements.lock, then `pip install --no-deps .`")
    if any(
        re.search(r"tritonserver|nvcr\.io/nvidia/tritonserver", i.value)
        for i in instructions
        if i.keyword in ("FROM", "RUN", "COPY")
    ):
        problems.append("the gate image must not contain Triton (it tests the cluster's Triton)")
    return problems


def lock_without(lock: Path, dockerfile: Path) -> Tuple[List[str], List[str]]:
    """The lock lines the Dockerfile's `grep -v '<pattern>'` keeps and drops, as Docker would."""
    text = dockerfile.read_text()
    patterns = re.findall(r"grep -v '([^']+)' requirements\.lock", text)
    lines = [ln for ln in lock.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    dropped = [ln for ln in lines if any(re.search(p, ln) for p in patterns)]
    return [ln for ln in lines if ln not in dropped], dropped
