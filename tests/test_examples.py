"""The training examples run, learn, and their two roads agree.

Each example of ``examples/`` runs in a fresh interpreter with ``--quick``; its last line
(``RESULT key=value ...``, written by ``examples/side_by_side.py``) says what it found:
the loss decreased, and the compiled road's gradients (and, where training does not
amplify rounding, its whole run) matched the tape's within the example's tolerance.  The
example itself already asserts that agreement (a nonzero exit otherwise); the test reads
the numbers again so that a changed example cannot quietly stop checking.  Times are
printed by the examples, never checked here.
"""

import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

from side_by_side import Progress  # noqa: E402

TRAINING_EXAMPLES = ["linear_regression", "softmax_regression", "mlp", "char_rnn", "ode_fit",
                     "lenet", "newton_cg"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("examples-cache")


def run_example(name, cache_dir, *options):
    env = dict(os.environ, PULLBACK_CACHE_DIR=str(cache_dir))
    return subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", *options],
                          capture_output=True, text=True, env=env, timeout=300)


def result_fields(stdout) -> dict:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), f"the last line is not a RESULT line: {last!r}"
    return dict(field.split("=", 1) for field in last.split()[1:])


@pytest.mark.parametrize("name", TRAINING_EXAMPLES)
def test_example_learns_and_both_roads_agree(name, cache_dir):
    run = run_example(name, cache_dir)
    assert run.returncode == 0, run.stdout + run.stderr
    fields = result_fields(run.stdout)
    assert fields["example"] == name
    assert float(fields["final_loss_tape"]) < 0.8 * float(fields["first_loss"])
    assert float(fields["final_loss_compiled"]) < 0.8 * float(fields["first_loss"])
    assert float(fields["max_difference"]) <= float(fields["tolerance"]) <= 1e-3
    assert float(fields["tape_ms"]) > 0 and float(fields["compiled_ms"]) > 0
    assert "\r" not in run.stdout   # not a terminal: plain progress lines, no bar
    assert "step" in run.stdout and "loss" in run.stdout


def test_plot_option_writes_a_png_or_says_what_to_install(tmp_path, cache_dir):
    target = tmp_path / "curves.png"
    run = run_example("linear_regression", cache_dir, "--steps", "5", "--plot", str(target))
    if importlib.util.find_spec("matplotlib") is None:
        assert run.returncode == 2
        assert "pip install 'pullback[examples]'" in run.stderr
        assert not target.exists()
    else:
        assert run.returncode == 0, run.stdout + run.stderr
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_a_bar_on_a_terminal_and_lines_elsewhere():
    terminal, log = FakeTerminal(), io.StringIO()
    for stream in (terminal, log):
        progress = Progress("tape", 20, stream=stream)
        for step in range(1, 21):
            progress.update(step, 1.0 / step)
    bar = terminal.getvalue()
    assert bar.count("\r") == 20 and "[" + "#" * 30 + "] 20/20" in bar and bar.endswith("\n")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [line.split()[2] for line in lines] == [f"{k}/20" for k in range(2, 21, 2)]
