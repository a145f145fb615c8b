"""Talking to a Triton server over its real HTTP API (tritonclient), and reading its metrics."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Set

import numpy as np
import requests
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from suite.errors import TritonError
from suite.golden import triton_datatype
from suite.waiting import WaitTimeout, wait_for

# Every client's keep-alive connection, per server URL: a stopping Triton waits for open HTTP
# connections before it unloads its models, so `close_connections` is called before it is stopped.
_connections: Dict[str, List[httpclient.InferenceServerClient]] = {}
_generation: Dict[str, int] = {}
_connections_lock = threading.Lock()


def close_connections(http_url: str) -> None:
    """Close this process's connections to `http_url`; the clients reconnect on their next call."""
    url = http_url.rstrip("/")
    with _connections_lock:
        _generation[url] = _generation.get(url, 0) + 1
        clients = _connections.pop(url, [])
    for client in clients:
        try:
            client.close()
        except Exception:  # already closed or broken: it is gone either way
            pass


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: Optional[int]
    state: str
    reason: str


class TritonControl:
    """Control and inference calls on one server. Safe to share between threads."""

    def __init__(self, http_url: str, metrics_url: Optional[str] = None, timeout: float = 30.0):
        self.http_url = http_url.rstrip("/")
        self.metrics_url = metrics_url
        self.timeout = timeout
        self._local = threading.local()  # tritonclient's HTTP client is not thread-safe

    def _client(self, timeout: Optional[float] = None) -> httpclient.InferenceServerClient:
        timeout = timeout or self.timeout
        key = f"client_{timeout}"
        with _connections_lock:
            generation = _generation.get(self.http_url, 0)
        cached = getattr(self._local, key, None)
        if cached is None or cached[0] != generation:
            host = self.http_url.split("://", 1)[-1]
            client = httpclient.InferenceServerClient(host, connection_timeout=timeout, network_timeout=timeout)
            with _connections_lock:
                _connections.setdefault(self.http_url, []).append(client)
            cached = (generation, client)
            setattr(self._local, key, cached)
        return cached[1]

    # -- health and state ---------------------------------------------------------------

    def live(self) -> bool:
        return self._safe(lambda c: c.is_server_live())

    def ready(self) -> bool:
        return self._safe(lambda c: c.is_server_ready())

    def model_ready(self, model: str, version: Optional[int] = None) -> bool:
        return self._safe(lambda c: c.is_model_ready(model, "" if version is None else str(version)))

    def _safe(self, call) -> bool:
        try:
            return bool(call(self._client(5.0)))
        except (InferenceServerException, OSError, ConnectionError):
            return False

    def index(self) -> List[IndexEntry]:
        try:
            entries = self._client().get_model_repository_index()
        except (InferenceServerException, OSError) as exc:  # OSError: nothing listens
            raise TritonError(f"repository index of {self.http_url} failed: {exc}") from exc
        return [
            IndexEntry(
                e["name"],
                int(e["version"]) if e.get("version", "").isdigit() else None,
                e.get("state", ""),
                e.get("reason", ""),
            )
            for e in entries
        ]

    def wait_server_ready(self, timeout_s: float) -> None:
        """Wait until /v2/health/ready answers 200; WaitTimeout after `timeout_s`."""
        wait_for(
            self.ready, timeout_s=timeout_s, interval_s=0.1, awaiting=f"{self.http_url}/v2/health/ready to answer 200"
        )

    def failed_versions(self) -> List[str]:
        """Versions whose last load failed, as "model vN: reason". Each keeps /v2/health/ready at
        400 until the model loads successfully or Triton restarts (Triton's strict readiness, the
        default: every version it knows must be READY or unloaded, InferenceServer::IsReady; an
        unload does not clear it, measured on 2.51), so once one is seen the server will not
        become ready by itself. Only models with a folder: the repository index lists no
        API-loaded one. Empty when the index does not answer."""
        try:
            entries = self.index()
        except TritonError:
            return []
        return [
            f"{e.name} v{e.version}: {e.reason}"
            for e in entries
            if e.state == "UNAVAILABLE" and e.reason not in ("", "unloaded")
        ]

    def wait_ready_or_failed(self, timeout_s: float) -> List[str]:
        """Wait until /v2/health/ready answers 200 (returns []) or a version whose load failed
        shows (returns `failed_versions`: waiting on would change nothing); WaitTimeout after
        `timeout_s` otherwise, e.g. for a failed API-loaded model the index does not list."""
        return wait_for(
            lambda: [] if self.ready() else (self.failed_versions() or None),
            timeout_s=timeout_s,
            interval_s=0.1,
            until=lambda found: found is not None,
            awaiting=f"{self.http_url}/v2/health/ready to answer 200, or a version that failed to load",
        )

    def draining(self) -> List[str]:
        """Model versions Triton still holds but no longer serves, as "model vN": an unload waits
        for the version's in-flight inferences (a slow model's can run on for seconds after its
        client gave up), and /v2/health/ready answers 400 meanwhile. Seen in the metrics, which
        list a loaded version, API-loaded ones too, until it is gone; the repository index lists
        only models with a folder. A version that failed to load is not listed. Empty without a
        metrics URL or an answer."""
        if not self.metrics_url:
            return []
        try:
            samples = self.metrics().samples
        except Exception:  # noqa: BLE001 - a dead or busy server: readiness is judged next anyway
            return []
        held = {
            (labels["model"], labels["version"])
            for name, labels, _ in samples
            if name == "nv_inference_count" and labels.get("version", "").isdigit()
        }
        return sorted(f"{m} v{v}" for m, v in held if not self.model_ready(m, int(v)))

    def wait_drained(self, timeout_s: float) -> List[str]:
        """Wait until no version is draining (`draining`); what still is when `timeout_s` ran out."""
        try:
            wait_for(
                self.draining,
                timeout_s=timeout_s,
                interval_s=0.2,
                until=lambda found: not found,
                awaiting=f"the versions unloading on {self.http_url} to finish their inferences",
            )
        except WaitTimeout as timeout:
            return timeout.last_value or []
        return []

    def wait_model_ready(self, model: str, version: int, timeout_s: float) -> None:
        """Wait for one model version's readiness (also for models outside the repository)."""
        try:
            wait_for(
                lambda: self.model_ready(model, version),
                timeout_s=timeout_s,
                interval_s=0.05,
                awaiting=f"{model} version {version} to be ready on {self.http_url}",
            )
        except WaitTimeout:
            raise TritonError(
                f"{model} version {version} is not ready on {self.http_url} after {timeout_s:.1f} s"
            ) from None

    def wait_model_settled(self, model: str, timeout_s: float) -> List[IndexEntry]:
        """Wait until no version of `model` is loading or unloading; its index entries, also when
        `timeout_s` ran out first (the caller judges what the index says)."""

        def entries() -> List[IndexEntry]:
            try:
                return [e for e in self.index() if e.name == model]
            except TritonError:
                return []

        try:
            return wait_for(
                entries,
                timeout_s=timeout_s,
                interval_s=0.1,
                until=lambda found: found and not any(e.state in ("LOADING", "UNLOADING") for e in found),
                awaiting=f"{model} to be neither loading nor unloading on {self.http_url}",
            )
        except WaitTimeout as timeout:
            return timeout.last_value

    def ready_versions(self, model: str) -> List[int]:
        return sorted(
            e.version for e in self.index() if e.name == model and e.state == "READY" and e.version is not None
        )

    def wait_version_ready(self, model: str, version: int, timeout_s: float) -> None:
        """Wait until `version` is READY and no other version of the model is still loading or
        unloading (Triton unloads the old version only after the new one is READY), or raise
        with the index as evidence."""

        def serves_only_settled() -> bool:
            entries = [e for e in self.index() if e.name == model]
            settled = not any(e.state in ("LOADING", "UNLOADING") for e in entries)
            return settled and self.model_ready(model, version) and version in self.ready_versions(model)

        try:
            wait_for(
                serves_only_settled,
                timeout_s=timeout_s,
                interval_s=0.05,
                awaiting=f"{model} version {version} to be READY, and settled, on {self.http_url}",
            )
        except WaitTimeout:
            raise TritonError(
                f"{model} version {version} is not READY on {self.http_url} after {timeout_s:.1f} s; "
                f"repository index: {[e.__dict__ for e in self.index() if e.name == model]}"
            ) from None

    # -- model control --------------------------------------------------------------------

    def load(self, model: str, config_json: Optional[str] = None, files: Optional[Dict[str, bytes]] = None) -> None:
        """Load (or reload) a model; with `config_json` the on-disk config is not used, with
        `files` ({"file:<version>/<name>": bytes}) not the repository folder either."""
        try:
            self._client(max(self.timeout, 120.0)).load_model(model, config=config_json, files=files)
        except InferenceServerException as exc:
            raise TritonError(f"Triton refused to load {model}: {exc.message()}") from exc

    def unload(self, model: str) -> None:
        try:
            self._client().unload_model(model)
        except InferenceServerException as exc:
            raise TritonError(f"Triton refused to unload {model}: {exc.message()}") from exc

    def metadata(self, model: str, version: Optional[int] = None) -> dict:
        return self._client().get_model_metadata(model, "" if version is None else str(version))

    # -- inference -------------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
        version: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Dict[str, np.ndarray]:
        """One inference over HTTP; raises TritonError on any failure, timeouts included."""
        tensors = []
        for name, array in inputs.items():
            tensor = httpclient.InferInput(name, list(array.shape), triton_datatype(array))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = [httpclient.InferRequestedOutput(n) for n in output_names]
        try:
            result = self._client(timeout).infer(
                model, tensors, model_version="" if version is None else str(version), outputs=wanted
            )
        except InferenceServerException as exc:
            raise TritonError(f"inference on {model} v{version} failed: {exc.message()}") from exc
        except Exception as exc:  # socket timeouts and resets surface as various types
            raise TritonError(f"inference on {model} v{version} failed: {type(exc).__name__}: {exc}") from exc
        return {n: result.as_numpy(n) for n in output_names}

    def loaded_models(self) -> Set[str]:
        """Names of the models Triton has READY, API-loaded ones included (the repository index
        lists only models with a folder); empty when the server does not answer. Metrics name
        every loaded model; an unloaded one lingers there a few seconds, hence the ready check."""
        if not self.metrics_url:
            return set()
        try:
            samples = self.metrics().samples
        except Exception:  # noqa: BLE001 - a dead or busy server has no metrics; callers check readiness
            return set()
        names = {labels["model"] for name, labels, _ in samples if name == "nv_inference_count" and "model" in labels}
        return {n for n in names if self.model_ready(n)}

    def versions_loaded_anywhere(self, version: int) -> List[str]:
        """Models (any name: a deployer's candidate too) that have `version` READY."""
        if not self.metrics_url:
            return []
        try:
            samples = self.metrics().samples
        except Exception:  # noqa: BLE001
            return []
        names = {
            labels["model"]
            for name, labels, _ in samples
            if name == "nv_inference_count" and labels.get("version") == str(version)
        }
        return sorted(n for n in names if self.model_ready(n, version))

    # -- metrics ----------------------------------------------------------------------------

    def metrics(self) -> "MetricSamples":
        if not self.metrics_url:
            raise TritonError("no metrics URL is known for this server")
        response = requests.get(self.metrics_url, timeout=5)
        response.raise_for_status()
        return MetricSamples.parse(response.text)


class MetricSamples:
    """Samples of one /metrics scrape, parsed by prometheus_client."""

    def __init__(self, samples: List[tuple]):
        self.samples = samples  # (name, labels dict, value)

    @classmethod
    def parse(cls, text: str) -> "MetricSamples":
        samples = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = sample.name
                # prometheus_client names counter samples `<family>_total`; Triton exposes them
                # without the suffix, and that is the name rules and dashboards use.
                if family.type == "counter" and name == family.name + "_total":
                    name = family.name
                samples.append((name, dict(sample.labels), sample.value))
        return cls(samples)

    def names(self) -> set:
        return {name for name, _, _ in self.samples}

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
        return sum(
            value
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )
