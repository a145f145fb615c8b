"""Triton `config.pbtxt` read and written through protobuf, never by hand."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from suite.errors import RepositoryError

if TYPE_CHECKING:
    import onnx


@lru_cache(maxsize=None)
def _onnx_to_triton() -> Dict[int, int]:
    """ONNX element types to Triton data types; only the types a tabular model uses need to be
    here, an unknown type is an error rather than a guess. onnx (with numpy) is imported only
    when a config is built from a graph: the smoke checks read configs, never graphs."""
    import onnx

    return {
        onnx.TensorProto.FLOAT: mc.TYPE_FP32,
        onnx.TensorProto.DOUBLE: mc.TYPE_FP64,
        onnx.TensorProto.FLOAT16: mc.TYPE_FP16,
        onnx.TensorProto.INT64: mc.TYPE_INT64,
        onnx.TensorProto.INT32: mc.TYPE_INT32,
        onnx.TensorProto.INT8: mc.TYPE_INT8,
        onnx.TensorProto.UINT8: mc.TYPE_UINT8,
        onnx.TensorProto.BOOL: mc.TYPE_BOOL,
        onnx.TensorProto.STRING: mc.TYPE_STRING,
    }


def parse(text: str, source: str = "config.pbtxt") -> mc.ModelConfig:
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise RepositoryError(f"{source} is not a valid Triton model config: {exc}") from exc
    return config


def read(path: Path) -> mc.ModelConfig:
    return parse(path.read_text(), str(path))


def render(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def to_json(config: mc.ModelConfig) -> str:
    """The JSON form Triton's load API accepts as a config override."""
    return json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))


def pinned(config: mc.ModelConfig, version: int) -> mc.ModelConfig:
    """A copy of `config` whose version_policy serves exactly `version`.

    Pinning keeps what Triton serves equal to `current.json`, also after a restart; without
    it Triton serves the latest numeric folder, whatever was committed.
    """
    out = mc.ModelConfig()
    out.CopyFrom(config)
    out.version_policy.Clear()
    out.version_policy.specific.versions.append(int(version))
    return out


def pinned_version(config: mc.ModelConfig) -> Optional[int]:
    """The single version a config pins, or None when it does not pin exactly one."""
    if config.version_policy.WhichOneof("policy_choice") != "specific":
        return None
    versions = list(config.version_policy.specific.versions)
    return versions[0] if len(versions) == 1 else None


def from_onnx(name: str, model_path: Path, instance_count: int = 1) -> mc.ModelConfig:
    """Build a config from an ONNX graph's signature, as Triton's auto-complete would.

    Used when the repository has no config.pbtxt for the model yet. `max_batch_size` is 0 so
    the dims are the graph's own, the batch dimension included (-1 where dynamic).
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    config = mc.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=0)
    for value in graph.input:
        if value.name not in initializers:
            config.input.append(mc.ModelInput(name=value.name, **_tensor(value, model_path)))
    for value in graph.output:
        config.output.append(mc.ModelOutput(name=value.name, **_tensor(value, model_path)))
    config.instance_group.append(mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=instance_count))
    return config


def _tensor(value: "onnx.ValueInfoProto", model_path: Path) -> dict:
    import onnx

    tensor = value.type.tensor_type
    if tensor.elem_type not in _onnx_to_triton():
        raise RepositoryError(
            f"{model_path}: tensor {value.name!r} has ONNX element type "
            f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}, which the gate cannot map to a "
            f"Triton data type; write config.pbtxt for this model yourself."
        )
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return {"data_type": _onnx_to_triton()[tensor.elem_type], "dims": dims}
