#!/usr/bin/env bash
# The seed platform's MLflow -> Triton deploy task, as its Airflow DAG runs it: curl against the
# registry, the mlflow CLI for the download, the model loaded in place. Part of the gate's zoo of
# foreign deployers (tests/deployers/): a realistic deployer with the seed's known gaps.
set -euo pipefail

model_dir="$GATE_MODEL_REPOSITORY/$GATE_MODEL"
registry="$MLFLOW_TRACKING_URI/api/2.0/mlflow"
stamp() { date -u +%Y%m%dT%H%M%S; }

if [ -n "${GATE_VERSION:-}" ]; then
  version="$GATE_VERSION"
else
  version=$(curl -sf "$registry/registered-models/alias?name=$GATE_MODEL&alias=$GATE_ALIAS" | jq -r .model_version.version)
fi
run_id=$(curl -sf "$registry/model-versions/get?name=$GATE_MODEL&version=$version" | jq -r .model_version.run_id)
echo "deploying $GATE_MODEL v$version (run $run_id) to $GATE_ENV"

mkdir -p "$model_dir"
mlflow artifacts download -u "models:/$GATE_MODEL/$version" -d "$model_dir/$version" > /dev/null

if [ ! -f "$model_dir/config.pbtxt" ]; then
  cat > "$model_dir/config.pbtxt" <<CONFIG
name: "$GATE_MODEL"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "input" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
output [
  { name: "label" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "probabilities" data_type: TYPE_FP32 dims: [ -1, 3 ] }
]
CONFIG
fi

fail() {
  echo "deploy failed at $1; keeping v$version as $version.failed_$(stamp)"
  mv "$model_dir/$version" "$model_dir/$version.failed_$(stamp)"
  curl -s -X POST "$GATE_TRITON_URL/v2/repository/models/$GATE_MODEL/load" > /dev/null || true
  exit 1
}

# Explicit mode: a load picks up the newest version folder.
curl -sf -X POST "$GATE_TRITON_URL/v2/repository/models/$GATE_MODEL/load" > /dev/null || fail load
curl -sf -X POST "$GATE_TRITON_URL/v2/models/$GATE_MODEL/infer" -H 'Content-Type: application/json' \
  -d '{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}' \
  > /dev/null || fail smoke

printf '{"active_version": %s, "run_id": "%s", "alias": "%s", "updated_at_utc": "%s"}\n' \
  "$version" "$run_id" "${GATE_ALIAS:-A}" "$(stamp)" > "$model_dir/current.json"
echo "deployed $GATE_MODEL v$version"
