#!/usr/bin/env bash
# A correct MLflow -> Triton deployer in bash, curl and jq (the gate's zoo: tests/deployers/).
# One deploy per environment (flock); the download staged and checked; the new version proved on a
# candidate model folder with the golden labels before the live model switches to it; config.pbtxt
# pinned; failed versions kept in attic/v<N>-<UTC> (the manifest declares that layout); current.json
# written last, atomically, tab-indented, with fields of its own. A crashed deploy is cleaned up by
# the next one.
set -euo pipefail

repo="$GATE_MODEL_REPOSITORY"
model="$GATE_MODEL"
dir="$repo/$model"
triton="$GATE_TRITON_URL"
registry="$MLFLOW_TRACKING_URI"
candidate="${model}_candidate"
cdir="$repo/$candidate"

mkdir -p "$dir"
exec 9> "$repo/.careful.lock"
flock 9

stamp() { date -u +%Y-%m-%dT%H-%M-%SZ; }
unload() { curl -s -X POST "$triton/v2/repository/models/$1/unload" > /dev/null || true; }
load() { curl -sf -X POST "$triton/v2/repository/models/$1/load" > /dev/null; }
ready() {
  for _ in $(seq 300); do
    curl -sf "$triton/v2/models/$1/versions/$2/ready" > /dev/null && return 0
    sleep 0.1
  done
  return 1
}
labels() {  # the labels model $1 version $2 gives for the golden inputs
  local body
  body=$(jq -c '{inputs: [{name: "input", datatype: "FP32", shape: [(.inputs.input.data | length), 4],
                            data: (.inputs.input.data | flatten)}], outputs: [{name: "label"}]}' "$GATE_GOLDEN")
  curl -sf --max-time 3 -X POST "$triton/v2/models/$1/versions/$2/infer" -H 'Content-Type: application/json' \
    -d "$body" | jq -c '.outputs[0].data'
}
config() {  # config.pbtxt of model $1 pinned to version $2
  cat <<CONFIG
name: "$1"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "input" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
output [
  { name: "label" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "probabilities" data_type: TYPE_FP32 dims: [ -1, 3 ] }
]
version_policy: { specific: { versions: [ $2 ] } }
CONFIG
}
replace() { cat > "$1.new.$$" && mv "$1.new.$$" "$1"; }  # stdin -> $1, atomically
attic() { mkdir -p "$dir/attic"; mv "$1" "$dir/attic/v$version-$(stamp)"; echo "kept v$version in attic/"; }
drop_candidate() { unload "$candidate"; rm -rf "$cdir"; }

# What a deploy that died left behind.
rm -rf "$dir"/.stage.* "$dir"/*.new.*
drop_candidate

if [ -n "${GATE_VERSION:-}" ]; then
  query="model-versions/get?name=$model&version=$GATE_VERSION"
else
  query="registered-models/alias?name=$model&alias=$GATE_ALIAS"
fi
found=$(curl -sf "$registry/api/2.0/mlflow/$query") || { echo "registry: cannot resolve $query"; exit 1; }
version=$(jq -r .model_version.version <<< "$found")
run_id=$(jq -r .model_version.run_id <<< "$found")
committed=$(jq -r .active_version "$dir/current.json" 2> /dev/null || true)
echo "deploying $model v$version over v${committed:-none} in $GATE_ENV"

stage=$(mktemp -d "$dir/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
curl -sf -o "$stage/model.onnx" "$registry/model-versions/get-artifact?path=model.onnx&name=$model&version=$version" \
  || { echo "download of v$version failed"; exit 1; }
if [ -d "$dir/$version" ] && ! cmp -s "$dir/$version/model.onnx" "$stage/model.onnx"; then
  echo "refusing: $dir/$version holds another model than registry v$version"
  exit 1
fi

# Prove it on a candidate model, away from the users of the live one.
mkdir -p "$cdir/$version"
cp "$stage/model.onnx" "$cdir/$version/"
config "$candidate" "$version" > "$cdir/config.pbtxt"
if ! load "$candidate"; then
  echo "v$version does not load"
  if [ -n "$committed" ]; then
    # Triton keeps a version whose load failed, and stays not-ready, until that name and version
    # load once: load the committed model's file under the failed version's number, then drop it.
    cp "$dir/$committed/model.onnx" "$cdir/$version/model.onnx"
    load "$candidate" || true
  fi
  drop_candidate
  attic "$stage"
  exit 1
fi
expected=$(jq -c .expected.label.data "$GATE_GOLDEN")
if ! ready "$candidate" "$version" || [ "$(labels "$candidate" "$version" || echo none)" != "$expected" ]; then
  echo "v$version does not answer the golden labels"
  drop_candidate
  attic "$stage"
  exit 1
fi

# Switch the live model; put everything back if it does not serve.
[ -d "$dir/$version" ] || mv "$stage" "$dir/$version"
previous_config=$(cat "$dir/config.pbtxt" 2> /dev/null || true)
config "$model" "$version" | replace "$dir/config.pbtxt"
if ! load "$model" || ! ready "$model" "$version"; then
  echo "v$version does not serve live: rolling back to v${committed:-none}"
  printf '%s\n' "$previous_config" | replace "$dir/config.pbtxt"
  load "$model" || true
  [ "$version" = "$committed" ] || attic "$dir/$version"
  drop_candidate
  exit 1
fi
jq -n --tab --argjson v "$version" --arg run "$run_id" --arg alias "${GATE_ALIAS:-}" \
  --arg at "$(date -u +%Y%m%dT%H%M%S)" --arg sha "$(sha256sum "$dir/$version/model.onnx" | cut -d' ' -f1)" \
  --arg host "${HOSTNAME:-unknown}" \
  '{active_version: $v, run_id: $run, alias: $alias, updated_at_utc: $at,
    deployed_by: {tool: "careful.sh", host: $host}, model_sha256: $sha}' | replace "$dir/current.json"
drop_candidate
echo "deployed v$version"
