"""How long the gate waits for what, and the embedded monitoring stack's timings: each once, with
its reason. Seconds everywhere (the `_S` suffix).

The monitoring stack is configured from these values (suite/monitoring_stack.py,
suite/monitoring_config.py) and the alert scenarios derive their windows from the same ones, so
the two cannot drift apart.
"""

from __future__ import annotations

# -- Triton ----------------------------------------------------------------------------------

# Triton answers 400 on /v2/health/ready while any model loads or unloads (Triton issue #7014),
# e.g. for ~1.5 s after a deploy: allow it to settle, no longer. Not waited out when the
# repository index shows a version whose load failed: that keeps the server unready until the
# model loads or Triton restarts (TritonControl.failed_versions).
SERVER_READY_S = 10.0
# ... counted once the versions still unloading have finished their inferences (Triton unloads a
# version only then): a slow model's smoke inference runs on after its deployer gave up, and a
# deployer that retries queues several. Stretched by a busy machine (6 s of CPU took over 10 s
# under four gate workers), it is the fault's doing, not a server left unready: at most this long.
DRAIN_S = 60.0
# Restoring a baseline: the model is READY again, yet the server may stay not-ready for good (a
# load that failed under any name keeps /v2/health/ready at 400 until Triton restarts). Wait this
# long for versions still unloading (the embedded Python backend waits 1 s per instance), then
# restart, as a pod would be: a restart took 0.24 s here, waiting out SERVER_READY_S 10 s. At
# once when the index shows a version whose load failed.
BASELINE_READY_S = 2.5
# A version reloaded from disk on a running server becomes READY: the deploy path's default
# --ready-timeout.
RELOAD_READY_S = 30.0
# A restarted Triton (a pod restart, a fault's repair) loads the committed model from disk; also
# a version a scenario loads through Triton's API, outside any deploy.
MODEL_LOAD_S = 60.0
# Triton refreshes its metrics every --metrics-interval-ms (500 ms on the embedded servers):
# a counted inference shows within a few refreshes.
METRICS_COUNTED_S = 5.0

# -- containers (--target docker) ------------------------------------------------------------

# A container's server answers (Triton with its committed models READY, MLflow, Prometheus,
# Alertmanager): an image's first start on 2 busy cores takes tens of seconds.
CONTAINER_READY_S = 120.0
CONTAINER_POLL_S = 0.5

# -- the embedded monitoring stack -------------------------------------------------------------

# Prometheus scrapes every Triton and evaluates the rules every second (kube-prometheus: 30 s),
# and re-reads its file-based service discovery as often, so scenarios see changes in seconds.
SCRAPE_INTERVAL_S = 1.0
EVALUATION_INTERVAL_S = SCRAPE_INTERVAL_S
TARGETS_REFRESH_S = 1.0
# Rules' `for:` durations and range windows are shortened to at most these (listed in the
# report's monitoring changes), so an alert fires within seconds of its condition.
MAX_FOR_S = 2.0
MAX_RANGE_S = 20.0
# Alertmanager's group_wait and group_interval are shortened to this (repeat_interval is not:
# shortened, every firing group would re-notify each second).
GROUP_WAIT_S = 1.0

# -- alert and metric scenarios -----------------------------------------------------------------

# Must stay silent: from a condition true in Triton to its notification there is a rule
# evaluation, the shortened `for:` and group_wait. A rule that would fire on a healthy platform
# has notified by the end of this window.
FIRING_CHAIN_S = EVALUATION_INTERVAL_S + MAX_FOR_S + GROUP_WAIT_S
# Alerts posted straight to Alertmanager reach their receivers (group_wait, then the HTTP post).
ROUTED_DELIVERY_S = 15.0
# Must stay silent: once the right deliveries arrived, a wrong route (its own group, its own
# group_wait) gets the same chance to deliver.
MISROUTE_WINDOW_S = 2 * GROUP_WAIT_S
# Triton killed -> its down alert at the environment's channel; Triton back -> resolved.
TRITON_DOWN_ALERT_S = 30.0
TRITON_DOWN_RESOLVED_S = 45.0
# A slow model under load -> the latency alert; replaced -> resolved (rate windows of up to
# MAX_RANGE_S must drain first).
LATENCY_ALERT_S = 75.0
LATENCY_RESOLVED_S = 60.0
# Prometheus has its own Triton target up, and the inference series rules and dashboards use.
TARGET_UP_S = 15.0
SERIES_S = 15.0
# A dashboard panel's query returns data after traffic.
PANEL_DATA_S = 10.0
