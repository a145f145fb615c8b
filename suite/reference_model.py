"""The reference model of the seed platform: iris LogisticRegression converted with skl2onnx.

Built offline from the iris data scikit-learn ships. Variants stand for real situations: a
retrained model (other weights, same answers) and faulty ones (labels flipped).
"""
from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Dict

import numpy as np

# Clear-cut samples of each class: a correct iris model labels them the same whatever its
# regularisation, so a retrained version passes and a wrong one fails.
GOLDEN_ROWS = [0, 7, 25, 63, 79, 97, 105, 117, 143]
GOLDEN_PROBABILITY_ATOL = 0.15

VARIANTS = ("v1", "retrained", "flipped")


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
    if variant == "v1":
        model = LogisticRegression(max_iter=1000).fit(X, y)
    elif variant == "retrained":
        model = LogisticRegression(C=0.5, max_iter=1000).fit(X, y)
    elif variant == "flipped":
        model = LogisticRegression(max_iter=1000).fit(X, (y + 1) % 3)  # every label wrong
    else:
        raise ValueError(f"unknown reference model variant {variant!r}; expected one of {VARIANTS}")
    onx = to_onnx(model, initial_types=[("input", FloatTensorType([None, 4]))],
                  options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    return onx.SerializeToString()


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
            "probabilities": {"datatype": "FP32", "atol": GOLDEN_PROBABILITY_ATOL,
                              "data": outputs["probabilities"].astype(np.float64).round(4).tolist()},
        },
    }


if __name__ == "__main__":  # python -m suite.reference_model deploy/golden/best_model.json
    target = Path(sys.argv[1])
    target.write_text(json.dumps(golden_document(), indent=1) + "\n")
    print(f"wrote {target}")
