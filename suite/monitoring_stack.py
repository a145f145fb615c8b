"""The embedded monitoring stack: per environment a real Prometheus and a real Alertmanager.

Each Prometheus discovers every Triton target but keeps only those whose `release` label is its
own (as a ServiceMonitor is selected by its release), and labels series as kube-prometheus does
for a ServiceMonitor on the Service `triton`: job="triton", namespace, service, endpoint, pod,
instance. Notifications go to a capture receiver that records receiver, channel and body.
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional
from urllib.parse import urlsplit

import requests
import yaml

from suite.errors import EnvironmentProblem, GateError
from suite.files import atomic_write
from suite.monitoring_config import AlertmanagerConfig, RuleSet, for_the_gate, shorten_rules
from suite.processes import PortTaken, ServerProcess, free_port, start_on_free_ports, stop_all
from suite.timings import EVALUATION_INTERVAL_S, MAX_FOR_S, MAX_RANGE_S, SCRAPE_INTERVAL_S, TARGETS_REFRESH_S

if TYPE_CHECKING:
    from suite.environment import Environment


def _duration(seconds: float) -> str:
    """Seconds as a Prometheus duration ("1s")."""
    return f"{seconds:g}s"


def find_binary(names: List[str], package: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise EnvironmentProblem(
        f"none of {names} is on PATH. The monitoring scenarios run real Prometheus and Alertmanager "
        f"processes from Debian's packages: apt-get install {package} (or run `make test`, which does)."
    )


# -- capture receiver ----------------------------------------------------------------------------


@dataclass
class Notification:
    receiver: str
    channel: str
    title: str
    text: str
    body: dict
    received_at: float

    @property
    def firing(self) -> bool:
        return "FIRING" in self.title.upper() or '"status": "firing"' in json.dumps(self.body).lower()


class CaptureReceiver:
    """Records every notification POSTed to /<receiver name> (Slack and webhook payloads)."""

    def __init__(self) -> None:
        self.notifications: List[Notification] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                attachment = (body.get("attachments") or [{}])[0]
                note = Notification(
                    self.path.strip("/"),
                    body.get("channel", ""),
                    attachment.get("title", ""),
                    attachment.get("text", ""),
                    body,
                    time.time(),
                )
                with receiver._lock:
                    receiver.notifications.append(note)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="capture-receiver", daemon=True)
        self._thread.start()

    def received(self, since: float = 0.0) -> List[Notification]:
        with self._lock:
            return [n for n in self.notifications if n.received_at >= since]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- one environment's monitoring --------------------------------------------------------------


@dataclass
class MonitoredTarget:
    env: str
    namespace: str
    release: str
    address: str  # host:port of Triton's metrics endpoint


@dataclass
class EnvironmentMonitoring:
    env: str
    release: str
    prometheus: ServerProcess
    prometheus_url: str
    alertmanager: Optional[ServerProcess]
    alertmanager_url: Optional[str]
    alertmanager_config: Optional[AlertmanagerConfig]
    alertmanager_config_path: Optional[Path]
    rules_path: Optional[Path]
    changes: List[str] = field(default_factory=list)

    def query(self, expr: str) -> List[dict]:
        response = requests.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"Prometheus refused {expr!r}: {body.get('error')}")
        return body["data"]["result"]

    def targets(self) -> List[dict]:
        return requests.get(f"{self.prometheus_url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]

    def alerts(self) -> List[dict]:
        return requests.get(f"{self.prometheus_url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]


class MonitoringStack:
    def __init__(
        self,
        workdir: Path,
        targets: List[MonitoredTarget],
        rules: Dict[str, Optional[RuleSet]],
        alertmanagers: Dict[str, Optional[AlertmanagerConfig]],
        containers=None,
    ):
        self.workdir = Path(workdir)
        self.targets = targets
        self.rules = rules
        self.alertmanager_configs = alertmanagers
        self.capture = CaptureReceiver()
        self.environments: Dict[str, EnvironmentMonitoring] = {}
        self.timings: Dict[str, float] = {}
        self.containers = containers
        if containers is None:
            self.prometheus_bin = find_binary(["prometheus"], "prometheus")
            self.alertmanager_bin = find_binary(["prometheus-alertmanager", "alertmanager"], "prometheus-alertmanager")

    @property
    def targets_file(self) -> Path:
        return self.workdir / "triton-targets.json"

    def start(self) -> "MonitoringStack":
        """Start every Prometheus and Alertmanager; on new ports if another process took one (the
        Prometheus configuration names its Alertmanager's port, so all of them are chosen again)."""
        begin = time.perf_counter()
        try:
            start_on_free_ports(self._start_once, new_ports=lambda: None)  # each start chooses anew
        except BaseException:
            self.capture.stop()
            raise
        self.timings["monitoring"] = time.perf_counter() - begin
        return self

    def _start_once(self) -> None:
        self.environments = {}
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_targets(self.targets)
        servers: List[ServerProcess] = []
        for target in self.targets:
            env_dir = self.workdir / target.env
            env_dir.mkdir(exist_ok=True)
            changes: List[str] = []
            am_process = am_url = am_path = am_config = None
            if self.alertmanager_configs.get(target.env) is not None:
                am_config = for_the_gate(self.alertmanager_configs[target.env], self.capture.url)
                changes += am_config.changes
                am_path = env_dir / "alertmanager.yml"
                am_path.write_text(am_config.to_yaml())
                port = free_port()
                am_url = f"http://127.0.0.1:{port}"
                am_process = self._server(
                    "alertmanager",
                    target.env,
                    [
                        f"--config.file={am_path}",
                        f"--storage.path={env_dir / 'am-data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--cluster.listen-address=",
                    ],
                    ready_url=f"{am_url}/-/ready",
                    log_path=env_dir / "alertmanager.log",
                    port=port,
                )
                servers.append(am_process)
            rules_path = None
            if self.rules.get(target.env) is not None:
                shortened, rule_changes = shorten_rules(self.rules[target.env], MAX_FOR_S, _duration(MAX_RANGE_S))
                changes += rule_changes
                rules_path = env_dir / "rules.yaml"
                rules_path.write_text(shortened.to_yaml())
            prom_port = free_port()
            prom_url = f"http://127.0.0.1:{prom_port}"
            config_path = env_dir / "prometheus.yml"
            config_path.write_text(yaml.safe_dump(self._prometheus_config(target, rules_path, am_url), sort_keys=False))
            prometheus = self._server(
                "prometheus",
                target.env,
                [
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={env_dir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                ready_url=f"{prom_url}/-/ready",
                log_path=env_dir / "prometheus.log",
                port=prom_port,
            )
            servers.append(prometheus)
            self.environments[target.env] = EnvironmentMonitoring(
                target.env,
                target.release,
                prometheus,
                prom_url,
                am_process,
                am_url,
                am_config,
                am_path,
                rules_path,
                changes,
            )
        threads = []
        errors: List[BaseException] = []

        def start(server: ServerProcess) -> None:
            try:
                server.start()
            except BaseException as exc:  # re-raised below, after every server had its chance
                errors.append(exc)

        for server in servers:
            thread = threading.Thread(target=start, args=(server,))
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        if errors:
            stop_all(servers)
            raise next((e for e in errors if not isinstance(e, PortTaken)), errors[0])

    def _server(self, role: str, env: str, args: List[str], ready_url: str, log_path: Path, port: int):
        """A host process, or with `containers` the manifest's images.<role> container (same
        arguments, the work folder mounted at the same path, host networking)."""
        if self.containers is not None:
            return self.containers.monitoring(role, env, args, self.workdir, ready_url)
        binary = self.prometheus_bin if role == "prometheus" else self.alertmanager_bin
        return ServerProcess(
            f"{role}[{env}]", [binary, *args], ready_url=ready_url, log_path=log_path, start_timeout=30, ports=[port]
        )

    def write_targets(self, targets: List[MonitoredTarget]) -> None:
        """What service discovery sees: every env's Triton with the labels its Service carries."""
        groups = [
            {
                "targets": [t.address],
                "labels": {
                    "__tmp_release": t.release,
                    "namespace": t.namespace,
                    "service": "triton",
                    "endpoint": "metrics",
                    "pod": f"triton-{t.env}-0",
                    "container": "triton",
                },
            }
            for t in targets
        ]
        atomic_write(self.targets_file, json.dumps(groups, indent=2))

    def _prometheus_config(self, target: MonitoredTarget, rules_path: Optional[Path], am_url: Optional[str]) -> dict:
        config: dict = {
            "global": {
                "scrape_interval": _duration(SCRAPE_INTERVAL_S),
                "evaluation_interval": _duration(EVALUATION_INTERVAL_S),
                "external_labels": {"prometheus": f"{target.release}/prometheus"},
            },
            "scrape_configs": [
                {
                    # kube-prometheus: job "serviceMonitor/<ns>/<name>/0", relabelled to the Service name
                    "job_name": f"serviceMonitor/{target.namespace}/triton/0",
                    "file_sd_configs": [
                        {"files": [str(self.targets_file)], "refresh_interval": _duration(TARGETS_REFRESH_S)}
                    ],
                    "relabel_configs": [
                        {"source_labels": ["__tmp_release"], "regex": target.release, "action": "keep"},
                        {"target_label": "job", "replacement": "triton"},
                    ],
                }
            ],
        }
        if rules_path:
            config["rule_files"] = [str(rules_path)]
        if am_url:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [am_url.split("//", 1)[1]]}]}]}
        return config

    def stop(self) -> None:
        processes = []
        for env in self.environments.values():
            processes.append(env.prometheus)
            if env.alertmanager:
                processes.append(env.alertmanager)
        stop_all(processes)
        self.capture.stop()


class NoMonitoringConfiguration(GateError):
    """The manifest has no `monitoring` section: there is nothing of the platform's to check."""


def for_platform(platform, environments: Dict[str, "Environment"], workdir: Path, containers=None) -> MonitoringStack:
    """The platform's rules and Alertmanager configs over the stack's Tritons (not started).

    `containers`: a docker target's plan, to run Prometheus and Alertmanager as its containers."""
    from suite.monitoring_config import alertmanager_for, rules_for

    if platform.spec.monitoring is None:
        raise NoMonitoringConfiguration(f"the platform manifest {platform.path} has no `monitoring` section")
    targets = [
        MonitoredTarget(env, spec.namespace, spec.release, urlsplit(environments[env].server.endpoints.metrics).netloc)
        for env, spec in platform.environments.items()
    ]
    return MonitoringStack(
        workdir,
        targets,
        {env: rules_for(platform, env) for env in platform.environments},
        {env: alertmanager_for(platform, env) for env in platform.environments},
        containers=containers,
    )
