"""The CI profile of the fault soak (benches/soak.py, issue 14): 3 minutes of seeded random
faults on its own three pods (prefix REDISHA_SOAK_PREFIX, default "rhsk", on
REDISHA_SOAK_SUBNET, default 10.78.0, so it does not touch the suite's "rhat" cluster), failing
on any invariant violation. The seed is fixed (REDISHA_SOAK_SEED, default 14): a failure replays
with `benches/soak.py --profile ci --seed <seed>`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# s: 3 min of faults, the last episode, set-up and teardown on a slow host, and up to 20 min
# waiting for another soak with the same prefix (the harness lock)
SOAK_TIMEOUT = 1800


def test_soak_ci_profile(binary):
    if os.geteuid() != 0:
        import pytest
        pytest.skip("the soak needs root (network and PID namespaces)")
    env = {**os.environ, "REDISHA_BIN": binary,
           "REDISHA_HA_PREFIX": os.environ.get("REDISHA_SOAK_PREFIX", "rhsk"),
           "REDISHA_HA_SUBNET": os.environ.get("REDISHA_SOAK_SUBNET", "10.78.0")}
    seed = os.environ.get("REDISHA_SOAK_SEED", "14")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benches" / "soak.py"), "--profile", "ci", "--seed", seed],
        env=env, capture_output=True, text=True, timeout=SOAK_TIMEOUT)
    text = out.stdout + out.stderr
    summary = [line for line in text.splitlines()
               if line.startswith(("soak:", "|", "VIOLATION", "event"))]
    print("\n".join(summary))
    assert out.returncode == 0, (
        f"soak seed {seed} exit {out.returncode} (1: invariant violations, 2: the soak "
        f"failed); summary:\n" + "\n".join(summary) + "\n--- tail ---\n"
        + "\n".join(text.splitlines()[-150:]))
