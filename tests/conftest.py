"""Subprocesses the tests start (examples, the CLI, fresh interpreters) import the same
pullback as the tests: the checkout's, installed or not.  A Python without pullback's
dependencies stops the run with one message saying how to install them."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)


REQUIRED = ("numpy", "gast", "llvmlite", "hypothesis", "distributed")


def pytest_configure(config):
    """Stop with one clear message, not an import error per test module, when this Python
    lacks pullback's dependencies (pytest run outside the project's venv)."""
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        pytest.exit(f"this Python ({sys.executable}) lacks {', '.join(missing)}; install the "
                    "test environment as the README says: python3 -m venv .venv && "
                    ".venv/bin/pip install -e '.[test]' && .venv/bin/pytest", returncode=4)
