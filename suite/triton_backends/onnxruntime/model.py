"""A Python-based Triton backend named `onnxruntime` that runs ONNX models with onnxruntime.

The PyPI Triton build has no native ONNX Runtime backend. Triton loads a folder
`<backend-directory>/onnxruntime/model.py` as the backend of every model whose config says
`platform: "onnxruntime_onnx"`, so standard production model repositories load unchanged here
and in the NGC container. Like the native backend it honours the config (tensors by name and
type, `max_batch_size`, `default_model_filename`) and refuses, at load, a config that does not
match the graph.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# Triton config data types -> ONNX Runtime type strings.
_ORT_TYPES = {
    "TYPE_FP32": "tensor(float)",
    "TYPE_FP64": "tensor(double)",
    "TYPE_FP16": "tensor(float16)",
    "TYPE_INT64": "tensor(int64)",
    "TYPE_INT32": "tensor(int32)",
    "TYPE_INT8": "tensor(int8)",
    "TYPE_UINT8": "tensor(uint8)",
    "TYPE_BOOL": "tensor(bool)",
    "TYPE_STRING": "tensor(string)",
}


def _mismatches(kind, config_tensors, graph_tensors, max_batch_size):
    graph = {t.name: t for t in graph_tensors}
    problems = []
    for tensor in config_tensors:
        name = tensor["name"]
        if name not in graph:
            problems.append(f"{kind} '{name}' is not in the model (it has {sorted(graph)})")
            continue
        want_type = _ORT_TYPES.get(tensor["data_type"])
        if want_type != graph[name].type:
            problems.append(f"{kind} '{name}': config data_type {tensor['data_type']}, model {graph[name].type}")
        dims = [int(d) for d in tensor.get("dims", [])]
        if max_batch_size > 0:
            dims = [-1] + dims
        shape = [d if isinstance(d, int) else -1 for d in graph[name].shape]
        if len(dims) != len(shape) or any(c != m and c != -1 and m != -1 for c, m in zip(dims, shape)):
            problems.append(f"{kind} '{name}': config dims {dims}, model shape {shape}")
    return problems


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the instance group gives the parallelism
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        max_batch = int(config.get("max_batch_size", 0))
        problems = _mismatches("input", config["input"], self.session.get_inputs(), max_batch) + _mismatches(
            "output", config["output"], self.session.get_outputs(), max_batch
        )
        if problems:
            raise pb_utils.TritonModelException(
                f"config of '{config['name']}' does not match model {path}: " + "; ".join(problems)
            )
        self.inputs = [(i["name"], pb_utils.triton_string_to_numpy(i["data_type"])) for i in config["input"]]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]]

    def execute(self, requests):
        responses = []
        names = [n for n, _ in self.outputs]
        for request in requests:
            try:
                feeds = {
                    n: pb_utils.get_input_tensor_by_name(request, n).as_numpy().astype(t, copy=False)
                    for n, t in self.inputs
                }
                results = self.session.run(names, feeds)
                tensors = [
                    pb_utils.Tensor(n, np.ascontiguousarray(v, dtype=t)) for (n, t), v in zip(self.outputs, results)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one bad request must not fail the others in the batch
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"onnxruntime: {exc}"))
                )
        return responses
