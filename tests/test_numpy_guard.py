"""numpy >= 2 breaks Triton's Python backend: the gate refuses it with a clear message."""

from __future__ import annotations

import numpy
import pytest

from suite.errors import EnvironmentProblem
from suite.triton_server import check_numpy


def test_numpy_2_is_refused_with_the_reason_and_the_fix(monkeypatch):
    monkeypatch.setattr(numpy, "__version__", "2.1.0")
    with pytest.raises(EnvironmentProblem) as raised:
        check_numpy()
    message = str(raised.value)
    assert "numpy 2.1.0" in message and "numpy<2" in message and "does not match size" in message


def test_installed_numpy_is_accepted():
    check_numpy()
