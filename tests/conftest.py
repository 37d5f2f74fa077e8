"""Subprocesses the tests start (examples, the CLI, fresh interpreters) import the same
pullback as the tests: the checkout's, installed or not."""

import os
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
