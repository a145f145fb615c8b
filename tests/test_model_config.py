"""config.pbtxt through protobuf: derive from ONNX, pin a version, round-trip exactly."""

from __future__ import annotations

import json

import pytest

from suite import model_config
from suite.errors import RepositoryError
from suite.reference_model import build_onnx


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.onnx"
    path.write_bytes(build_onnx("v1"))
    return path


def test_config_from_onnx_matches_the_seed_signature(onnx_file):
    config = model_config.from_onnx("best_model", onnx_file)
    assert config.platform == "onnxruntime_onnx"
    assert [(i.name, model_config.mc.DataType.Name(i.data_type), list(i.dims)) for i in config.input] == [
        ("input", "TYPE_FP32", [-1, 4])
    ]
    outputs = {o.name: (model_config.mc.DataType.Name(o.data_type), list(o.dims)) for o in config.output}
    assert outputs == {"probabilities": ("TYPE_FP32", [-1, 3]), "label": ("TYPE_INT64", [-1])}


def test_pinning_serves_exactly_one_version_and_round_trips(onnx_file):
    config = model_config.pinned(model_config.from_onnx("best_model", onnx_file), 12)
    assert model_config.pinned_version(config) == 12
    text = model_config.render(config)
    assert model_config.parse(text) == config
    assert "specific" in text and "12" in text
    body = json.loads(model_config.to_json(config))
    assert [int(v) for v in body["version_policy"]["specific"]["versions"]] == [12]  # int64 is a JSON string


def test_repinning_replaces_the_old_policy():
    config = model_config.parse('name: "m" version_policy { latest { num_versions: 2 } }')
    assert model_config.pinned_version(config) is None
    assert model_config.pinned_version(model_config.pinned(config, 3)) == 3


def test_invalid_config_text_is_a_clear_error():
    with pytest.raises(RepositoryError, match="not a valid Triton model config"):
        model_config.parse("name: best_model platform: [")
