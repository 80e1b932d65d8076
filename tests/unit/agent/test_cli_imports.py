"""Every ``metasentry`` command loads the config first; what that import pulls in is paid on
each invocation, so the heavy numerics (scipy, TensorFlow) load only where they are used."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_and_the_config_load_without_scipy_or_tensorflow() -> None:
    code = ("import sys, agent.cli, agent.config; "
            "print(sorted(m for m in ('scipy', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
