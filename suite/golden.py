"""Golden sets: known inputs with the outputs a correct model must give.

The smoke check compares outputs with these; an HTTP 200 alone proves nothing (the seed's gap).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np

from suite.errors import GoldenMismatch, RepositoryError


@dataclass(frozen=True)
class OutputExpectation:
    values: np.ndarray
    atol: float = 0.0  # 0 means exact; floats usually need a tolerance


@dataclass(frozen=True)
class GoldenSet:
    """A batch of inputs and the expected outputs for the whole batch."""

    inputs: Dict[str, np.ndarray]
    expected: Dict[str, OutputExpectation]
    source: str = "<memory>"
    notes: List[str] = field(default_factory=list)

    def compare(self, outputs: Dict[str, np.ndarray]) -> List[str]:
        """Every way `outputs` differs from the golden set, as sentences; empty when equal."""
        problems = []
        for name, want in self.expected.items():
            got = outputs.get(name)
            if got is None:
                problems.append(f"output {name!r} is missing (got outputs {sorted(outputs)})")
                continue
            got = np.asarray(got)
            if got.shape != want.values.shape:
                problems.append(f"output {name!r} has shape {list(got.shape)}, expected {list(want.values.shape)}")
                continue
            if want.atol == 0:
                bad = np.flatnonzero(got.reshape(-1) != want.values.reshape(-1))
            else:
                diff = np.abs(got.astype(np.float64) - want.values.astype(np.float64))
                bad = np.flatnonzero(~(diff.reshape(-1) <= want.atol))
            if bad.size:
                i = int(bad[0])
                problems.append(
                    f"output {name!r} differs from golden at {bad.size} of {want.values.size} "
                    f"values (first at flat index {i}: got {got.reshape(-1)[i]!r}, expected "
                    f"{want.values.reshape(-1)[i]!r}, tolerance {want.atol})"
                )
        return problems

    def check(self, outputs: Dict[str, np.ndarray], what: str) -> None:
        problems = self.compare(outputs)
        if problems:
            raise GoldenMismatch(f"{what} does not give the golden outputs of {self.source}: " + "; ".join(problems))


def load_golden(path: Path) -> GoldenSet:
    """Read a golden file: {"inputs": {name: {"datatype", "data"}}, "expected": {...}}."""
    try:
        body = json.loads(Path(path).read_text())
        inputs = {
            name: np.asarray(spec["data"], dtype=_np_dtype(spec["datatype"])) for name, spec in body["inputs"].items()
        }
        expected = {
            name: OutputExpectation(
                np.asarray(spec["data"], dtype=_np_dtype(spec["datatype"])), float(spec.get("atol", 0.0))
            )
            for name, spec in body["expected"].items()
        }
    except FileNotFoundError as exc:
        raise RepositoryError(
            f"golden set {path} does not exist; name one with `golden:` under `model:` in the platform manifest."
        ) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise RepositoryError(
            f"golden set {path} is malformed ({exc!r}). Expected JSON with 'inputs' and "
            f"'expected', each mapping a tensor name to {{'datatype': 'FP32', 'data': [...]}} "
            f"(and an optional 'atol' on expected outputs)."
        ) from exc
    return GoldenSet(inputs, expected, str(path), list(body.get("notes", [])))


_DTYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


def _np_dtype(triton_type: str) -> type:
    if triton_type not in _DTYPES:
        raise ValueError(f"datatype {triton_type!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[triton_type]


def triton_datatype(array: np.ndarray) -> str:
    for name, dtype in _DTYPES.items():
        if array.dtype == dtype:
            return name
    raise ValueError(f"no Triton datatype for numpy dtype {array.dtype}")
