"""The seeded-defect catalogue: realistic platform defects, each with the scenario that must catch it."""

from __future__ import annotations

from typing import List

from tests.defects.deployers import DEFECTS as DEPLOYER_DEFECTS
from tests.defects.monitoring import DEFECTS as MONITORING_DEFECTS
from tools.defects import Defect

CATALOGUE: List[Defect] = [*MONITORING_DEFECTS, *DEPLOYER_DEFECTS]
assert len({d.id for d in CATALOGUE}) == len(CATALOGUE), "defect ids must be unique"
