"""The reference model of the seed platform: iris LogisticRegression converted with skl2onnx.

Built offline from the iris data scikit-learn ships. Variants stand for real situations: a
retrained model (other weights, same answers) and faulty ones (labels flipped).
"""

from __future__ import annotations

import json
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Dict

import numpy as np

# Clear-cut samples of each class: a correct iris model labels them the same whatever its
# regularisation, so a retrained version passes and a wrong one fails.
GOLDEN_ROWS = [0, 7, 25, 63, 79, 97, 105, 117, 143]
GOLDEN_PROBABILITY_ATOL = 0.15

VARIANTS = ("v1", "retrained", "flipped")
# Faulty registry versions for the fault catalogue (see suite/faults.py).
FAULTY = ("renamed-input", "five-features", "double-input")


def _iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X.astype(np.float32), y


@lru_cache(maxsize=None)
def build_onnx(variant: str = "v1") -> bytes:
    """ONNX bytes of the iris classifier: input `input` FP32 [-1,4]; outputs `label`, `probabilities`."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    X, y = _iris()
    if variant == "renamed-input":
        return _rename_input(build_onnx("v1"), "features")
    initial_type = FloatTensorType([None, 4])
    if variant == "five-features":
        X = np.hstack([X, X[:, :1]])  # retrained on an extra feature: dims [-1, 5]
        initial_type = FloatTensorType([None, 5])
        model = LogisticRegression(max_iter=1000).fit(X, y)
    elif variant == "double-input":
        from skl2onnx.common.data_types import DoubleTensorType

        X = X.astype(np.float64)
        initial_type = DoubleTensorType([None, 4])
        model = LogisticRegression(max_iter=1000).fit(X, y)
    elif variant == "v1":
        model = LogisticRegression(max_iter=1000).fit(X, y)
    elif variant == "retrained":
        model = LogisticRegression(C=0.5, max_iter=1000).fit(X, y)
    elif variant == "flipped":
        model = LogisticRegression(max_iter=1000).fit(X, (y + 1) % 3)  # every label wrong
    elif variant not in ("five-features", "double-input"):
        raise ValueError(f"unknown reference model variant {variant!r}; expected one of {VARIANTS + FAULTY}")
    onx = to_onnx(
        model,
        initial_types=[("input", initial_type)],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString()


def _rename_input(model: bytes, new_name: str) -> bytes:
    import onnx

    proto = onnx.load_from_string(model)
    old = proto.graph.input[0].name
    proto.graph.input[0].name = new_name
    for node in proto.graph.node:
        node.input[:] = [new_name if i == old else i for i in node.input]
    return proto.SerializeToString()


@lru_cache(maxsize=None)
def build_slow_onnx(matmuls: int) -> bytes:
    """The v1 model with a genuinely slow branch: same answers, latency grows with `matmuls`.

    The branch depends on the input (so it cannot be constant-folded) and joins the
    probabilities through `+ 0 * tanh(...)` (bounded, so never NaN).
    """
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load_from_string(build_onnx("v1"))
    graph = proto.graph
    producer = next(n for n in graph.node if "probabilities" in n.output)
    producer.output[:] = ["probabilities_fast" if o == "probabilities" else o for o in producer.output]
    rng = np.random.RandomState(0)
    size = 1024
    graph.initializer.extend(
        [
            numpy_helper.from_array((rng.rand(4, size).astype(np.float32) - 0.5) * 0.1, "slow_w"),
            numpy_helper.from_array((rng.rand(size, size).astype(np.float32) - 0.5) * 0.1, "slow_b"),
            numpy_helper.from_array(np.zeros((1,), dtype=np.float32), "slow_zero"),
        ]
    )
    input_name = graph.input[0].name
    nodes = [
        helper.make_node("MatMul", [input_name, "slow_w"], ["slow_t"]),
        helper.make_node("Transpose", ["slow_t"], ["slow_tt"]),
        helper.make_node("MatMul", ["slow_tt", "slow_t"], ["slow_s0"]),
    ]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"slow_s{i}", "slow_b"], [f"slow_m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"slow_m{i}"], [f"slow_s{i + 1}"]))
    nodes += [
        helper.make_node("ReduceMean", [f"slow_s{matmuls}"], ["slow_r"], keepdims=0),
        helper.make_node("Mul", ["slow_r", "slow_zero"], ["slow_z"]),
        helper.make_node("Add", ["probabilities_fast", "slow_z"], ["probabilities"]),
    ]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def slow_onnx_for(seconds: float) -> bytes:
    """A slow model whose single-threaded inference takes about `seconds` on this machine."""
    import onnxruntime as ort

    probe_matmuls = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(build_slow_onnx(probe_matmuls), options, providers=["CPUExecutionProvider"])
    rows = _iris()[0][GOLDEN_ROWS]
    session.run(None, {"input": rows})
    # Timed in this thread's CPU time (one intra-op thread: ONNX Runtime computes in the calling
    # thread), the fastest of several runs. Wall time on a busy machine calibrated a model too
    # fast once the machine was idle again: a "slow" model a deployer's 5 s smoke timeout accepted
    # (three concurrent gate sessions on 2 cores; again with four xdist workers). CPU time here
    # is the same busy or idle (8 matmuls: 0.073 s both; wall 0.072 idle, 0.16-0.20 s busy).
    timings = []
    for _ in range(5):
        start = time.thread_time()
        session.run(None, {"input": rows})
        timings.append(time.thread_time() - start)
    per_matmul = min(timings) / probe_matmuls
    return build_slow_onnx(max(1, round(seconds / per_matmul)))


@lru_cache(maxsize=None)
def build_slow_loading_onnx(additions: int) -> bytes:
    """The v1 model with a long chain of cheap additions: same answers, quick to answer, slow to
    load (ONNX Runtime's session set-up grows with the number of nodes), as real models are.

    The chain starts from the input (so it cannot be constant-folded) and joins the probabilities
    through `+ 0 * chain`.
    """
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load_from_string(build_onnx("v1"))
    graph = proto.graph
    producer = next(n for n in graph.node if "probabilities" in n.output)
    producer.output[:] = ["probabilities_fast" if o == "probabilities" else o for o in producer.output]
    graph.initializer.append(numpy_helper.from_array(np.zeros((1,), dtype=np.float32), "chain_zero"))
    nodes = [helper.make_node("ReduceSum", [graph.input[0].name], ["chain_0"], keepdims=0)]
    for i in range(additions):
        # a constant of its own per node: equal ones would be merged by the optimizer
        graph.initializer.append(numpy_helper.from_array(np.full((1,), i * 1e-6, dtype=np.float32), f"chain_c{i}"))
        nodes.append(helper.make_node("Add", [f"chain_{i}", f"chain_c{i}"], [f"chain_{i + 1}"]))
    nodes += [
        helper.make_node("Mul", [f"chain_{additions}", "chain_zero"], ["chain_z"]),
        helper.make_node("Add", ["probabilities_fast", "chain_z"], ["probabilities"]),
    ]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def slow_loading_onnx_for(seconds: float) -> bytes:
    """A model whose ONNX Runtime session takes about `seconds` to set up on this machine.

    Set-up time grows faster than the node count (about n^1.4 here), so two probes fit the
    exponent; each the fastest of two in this thread's CPU time, as `slow_onnx_for`: wall time on
    a busy machine would calibrate too few.
    """
    import math

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the backend's instances run

    def setup_s(additions: int) -> float:
        timings = []
        for _ in range(2):
            start = time.thread_time()
            ort.InferenceSession(build_slow_loading_onnx(additions), options, providers=["CPUExecutionProvider"])
            timings.append(time.thread_time() - start)
        return min(timings)

    small, large = 2000, 6000
    t_small, t_large = setup_s(small), setup_s(large)
    exponent = max(1.0, math.log(t_large / t_small) / math.log(large / small))
    return build_slow_loading_onnx(max(large, round(large * (seconds / t_large) ** (1 / exponent))))


def build_all() -> None:
    """Build (and cache) every variant; run in a thread while the stack starts."""
    for variant in VARIANTS:
        build_onnx(variant)


def run_onnx(model: bytes, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


def golden_document() -> dict:
    """The golden set of the reference model: true labels, v1's probabilities with a tolerance."""
    X, y = _iris()
    rows = X[GOLDEN_ROWS]
    outputs = run_onnx(build_onnx("v1"), {"input": rows})
    return {
        "notes": [
            "Iris samples (rows %s of sklearn's iris data) with their true labels; probabilities "
            "from the reference v1 model, tolerance %.2f so a retrained model passes and a "
            "model with other weights does not." % (GOLDEN_ROWS, GOLDEN_PROBABILITY_ATOL)
        ],
        "inputs": {"input": {"datatype": "FP32", "data": rows.astype(np.float64).round(4).tolist()}},
        "expected": {
            "label": {"datatype": "INT64", "data": y[GOLDEN_ROWS].tolist()},
            "probabilities": {
                "datatype": "FP32",
                "atol": GOLDEN_PROBABILITY_ATOL,
                "data": outputs["probabilities"].astype(np.float64).round(4).tolist(),
            },
        },
    }


if __name__ == "__main__":  # python -m suite.reference_model deploy/golden/best_model.json
    target = Path(sys.argv[1])
    target.write_text(json.dumps(golden_document(), indent=1) + "\n")
    print(f"wrote {target}")
