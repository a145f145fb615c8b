"""A Python-based Triton backend named `onnxruntime` that runs ONNX models with onnxruntime.

The PyPI Triton build has no native ONNX Runtime backend. Triton loads a folder
`<backend-directory>/onnxruntime/model.py` as the backend of every model whose config says
`platform: "onnxruntime_onnx"`, so standard production model repositories load unchanged here
and in the NGC container. It honours the config: tensors by name and type, `max_batch_size`,
`default_model_filename`.
"""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the instance group gives the parallelism
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [(i["name"], pb_utils.triton_string_to_numpy(i["data_type"])) for i in config["input"]]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]]
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        # Fail the load, as the native backend does, when the config names tensors the graph lacks.
        missing = [n for n, _ in self.inputs if n not in graph_inputs] + \
                  [n for n, _ in self.outputs if n not in graph_outputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"config names tensors {missing} that model {path} does not have "
                f"(graph inputs {sorted(graph_inputs)}, outputs {sorted(graph_outputs)})")

    def execute(self, requests):
        responses = []
        names = [n for n, _ in self.outputs]
        for request in requests:
            try:
                feeds = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy().astype(t, copy=False)
                         for n, t in self.inputs}
                results = self.session.run(names, feeds)
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(v, dtype=t))
                           for (n, t), v in zip(self.outputs, results)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one bad request must not fail the others in the batch
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"onnxruntime: {exc}")))
        return responses
