"""The engine of the Triton deployment gate: stack control, registry, repository and deploy path.

Importable without pytest; the pytest plugin lives in `fixtures/`.
"""

from __future__ import annotations

__version__ = "0.1.0"
