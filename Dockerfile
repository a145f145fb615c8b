# The gate image: the suite and its pinned dependencies, run by the Argo CD PostSync hook as
# `pytest scenarios -m smoke --target k8s` (deploy/gitops). No Triton inside: it tests the cluster's.
# Build: docker build -t registry.example.com/mlops/triton-deploy-gate:0.1.0 .
# (name and tag as in deploy/gitops/base/kustomization.yaml, the one place the hook takes them from)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# promtool and amtool check rules and routing tables; bookworm has the versions the gate is
# verified with (Prometheus 2.42, Alertmanager 0.25). The servers themselves are never started here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus prometheus-alertmanager \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/triton-deploy-gate

# Dependencies first, from the lock alone, so a code change reuses this layer. nvidia-pytriton
# only carries the tritonserver binary of the embedded stack: left out, this image never starts Triton.
COPY requirements.lock ./
RUN grep -v '^nvidia-pytriton==' requirements.lock > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The suite itself; --no-deps because the lock above is the complete, pinned set.
COPY pyproject.toml README.md conftest.py ./
COPY suite/ suite/
COPY fixtures/ fixtures/
COPY scenarios/ scenarios/
COPY reports/ reports/
COPY deploy/ deploy/
RUN pip install --no-deps . \
 && rm -rf build *.egg-info

# Numeric non-root user: Kubernetes can only verify runAsNonRoot against a numeric UID.
RUN groupadd --system --gid 10001 gate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home gate \
 && mkdir -p reports/out && chown 10001:10001 reports/out
USER 10001

# `pytest scenarios` runs from here, with the project's pytest settings (pyproject.toml).
ENTRYPOINT ["pytest"]
CMD ["scenarios", "-m", "smoke"]
