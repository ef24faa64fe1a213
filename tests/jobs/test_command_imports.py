"""Command modules load only what their command needs: the CLI imports just the chosen one, so `get` starts fast."""
from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("dask", "distributed", "numba", "matplotlib")

SCRIPT = """
import importlib, sys
importlib.import_module(sys.argv[1])
print(" ".join(sorted(name for name in sys.argv[2:] if name in sys.modules)))
"""


@pytest.mark.parametrize("module, needed", [
    ("imgdedup.jobs.get", ()),
    ("imgdedup.jobs.keygen", ()),
    ("imgdedup.jobs.storecmd", ()),
    ("imgdedup.jobs.unmerge", ()),
    ("imgdedup.jobs.report", ("matplotlib",)),  # the HTML page's plots
])
def test_command_module_does_not_import_what_its_command_does_not_need(module, needed):
    result = subprocess.run([sys.executable, "-c", SCRIPT, module, *HEAVY], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == sorted(needed)
