"""A deployer with transient trouble, for the gate's nightly tests (tests/test_nightly.py).

It is the builtin deploy path (`python -m suite deploy`), except:
- TRANSIENT_FAIL: which deploys of a registry *version* fail at once, before touching anything, as
  a registry timing out would: "1,3" (the first and third such deploy), "all", or empty. Deploys
  of the alias (the gate's baselines) are never failed. Counted in the file TRANSIENT_COUNTER.
- TRANSIENT_SLOW_S: seconds spent before every deploy (a slower deploy stage, for the history).

Usage: python transient.py   (reads the GATE_* variables, like `python -m suite deploy`)
"""

import os
import sys
import time
from pathlib import Path

time.sleep(float(os.environ.get("TRANSIENT_SLOW_S") or 0))
failing = os.environ.get("TRANSIENT_FAIL", "")
if os.environ.get("GATE_VERSION") and failing:
    counter = Path(os.environ["TRANSIENT_COUNTER"])
    calls = int(counter.read_text() or 0) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if failing == "all" or str(calls) in failing.split(","):
        print(f"transient: version deploy #{calls} fails (TRANSIENT_FAIL={failing}): registry timed out", flush=True)
        sys.exit(1)
os.execvp(sys.executable, [sys.executable, "-m", "suite", "deploy", "--env", os.environ["GATE_ENV"]])
