# The gate image: the suite and its pinned dependencies, run by the Argo CD PostSync hook as
# `pytest scenarios -m smoke --target k8s` (deploy/gitops). No Triton inside: it tests the cluster's.
# Build: docker build -t registry.example.com/mlops/triton-deploy-gate:0.1.0 .
# (name and tag as in deploy/gitops/base/kustomization.yaml, the one place the hook takes them from)
# `make images` builds it as the manifest's images.gate, on BASE (default below; where no image
# registry answers, a Debian base built offline), with the build machine's CA bundle if any.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# promtool and amtool check rules and routing tables; bookworm has the versions the gate is
# verified with (Prometheus 2.42, Alertmanager 0.25). The servers themselves are never started here.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates prometheus prometheus-alertmanager \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

# Some sites reach the package index only through a TLS-inspecting proxy: `make images` puts the
# build machine's CA bundle in the context as build-ca.crt (`Dockerfile` keeps the COPY non-empty).
COPY Dockerfile build-ca.cr[t] /tmp/context/
RUN if [ -s /tmp/context/build-ca.crt ]; then cp /tmp/context/build-ca.crt /etc/ssl/certs/ca-certificates.crt; fi \
 && rm -rf /tmp/context
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt

WORKDIR /opt/triton-deploy-gate

# Dependencies first, from the lock alone, so a code change reuses this layer. nvidia-pytriton
# only carries the tritonserver binary of the embedded stack: left out, this image never starts Triton.
COPY requirements.lock ./
RUN python3 -m venv /opt/venv \
 && grep -v '^nvidia-pytriton==' requirements.lock > /tmp/requirements.txt \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
ENV PATH=/opt/venv/bin:$PATH

# The suite itself; --no-deps because the lock above is the complete, pinned set.
COPY pyproject.toml README.md conftest.py ./
COPY suite/ suite/
COPY fixtures/ fixtures/
COPY scenarios/ scenarios/
COPY reports/ reports/
COPY deploy/ deploy/
RUN pip install --no-deps . \
 && rm -rf build *.egg-info
# Bytecode, and the scenarios' assertion rewriting, made once here: `pytest scenarios` imports these
# sources from this folder, and under the hook's read-only root (and PYTHONDONTWRITEBYTECODE) every
# run would compile and rewrite them again.
RUN python -m compileall -q suite fixtures reports conftest.py \
 && PYTHONDONTWRITEBYTECODE= pytest scenarios --co -q --report-dir /tmp/collect > /dev/null \
 && rm -rf /tmp/collect

# Numeric non-root user: Kubernetes can only verify runAsNonRoot against a numeric UID.
RUN groupadd --system --gid 10001 gate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home gate \
 && mkdir -p reports/out && chown 10001:10001 reports/out
USER 10001

# `pytest scenarios` runs from here, with the project's pytest settings (pyproject.toml).
ENTRYPOINT ["pytest"]
CMD ["scenarios", "-m", "smoke"]
