"""The command line's start-up: each command registered by the module the table names, nothing heavy imported early."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from imgdedup.jobs.cli import COMMANDS, build_parser

HEAVY = ("dask", "distributed", "numba", "matplotlib")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_is_registered_by_the_module_the_table_names(command):
    registered = _subcommands(build_parser(command))
    assert list(registered) and set(registered) == set(COMMANDS)
    assert registered[command].get_default("run") is not None


def _imported_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in out.split()}


def test_help_imports_no_command_module():
    imported = _imported_after("from imgdedup.jobs import cli\ntry:\n    cli.main(['--help'])\n"
                               "except SystemExit:\n    pass")
    assert not imported & set(HEAVY)
    assert "pyarrow" not in imported


@pytest.mark.parametrize("module", ["imgdedup.jobs.get", "imgdedup.jobs.keygen", "imgdedup.jobs.storecmd"])
def test_light_commands_import_no_dask_numba_or_matplotlib(module):
    assert not _imported_after(f"import {module}") & set(HEAVY)


def test_the_package_imports_nothing_until_a_name_is_used():
    imported = _imported_after("import imgdedup")
    assert not imported & {*HEAVY, "numpy", "pyarrow", "PIL"}
