"""bench/gradbench/run.py speaks GradBench's protocol, and its derivatives are right.

One scripted conversation (start, then define/evaluate/analysis per module, then end)
with the tool as a subprocess; every derivative it returns is checked against central
differences of the primal it returns, and primals against independent numpy formulas.
particle and saddle (nested AD through a gradient-descent solver) are checked against
the same solver run here on plain numpy with independent derivatives: central
differences of an Euler loop with the analytic force, the analytic saddle gradients.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNS = {"min_runs": 2, "min_seconds": 0}
EPS = 1e-6


class Conversation:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "bench/gradbench/run.py"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.next_id = 0

    def send(self, kind, **fields):
        message = {"id": self.next_id, "kind": kind, **fields}
        self.next_id += 1
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        response = json.loads(self.proc.stdout.readline())
        assert response["id"] == message["id"]
        return response

    def evaluate(self, module, function, data, runs=RUNS):
        response = self.send("evaluate", module=module, function=function,
                             input=data | runs if isinstance(data, dict) else data)
        assert response["success"], response.get("error")
        names = [t["name"] for t in response["timings"]]
        assert names.count("evaluate") >= (runs["min_runs"] if isinstance(data, dict) else 1)
        assert self.send("analysis", of=self.next_id - 1, valid=True) == {
            "id": self.next_id - 1}
        return response["output"], names

    def close(self):
        self.send("end")
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def tool():
    conversation = Conversation()
    assert conversation.send("start", eval="test")["tool"] == "pullback"
    yield conversation
    conversation.close()


def define(tool, module):
    response = tool.send("define", module=module)
    assert response["success"], response.get("error")


def directional_fd(primal, x, direction):
    return (primal(x + EPS * direction) - primal(x - EPS * direction)) / (2 * EPS)


def check_gradient(tool, module, primal_name, gradient_name, make_input, x):
    """The tool's gradient . v against central differences of the tool's primal."""
    gradient, names = tool.evaluate(module, gradient_name, make_input(x))
    assert "compile" in names
    gradient = np.asarray(gradient, dtype=np.float64).reshape(np.shape(x))
    direction = np.random.default_rng(0).normal(size=np.shape(x))

    def primal(point):
        return tool.evaluate(module, primal_name, make_input(point))[0]

    numeric = directional_fd(primal, x, direction)
    assert np.sum(gradient * direction) == pytest.approx(numeric, rel=1e-5, abs=1e-7)
    return gradient


def test_hello(tool):
    define(tool, "hello")
    assert tool.evaluate("hello", "square", 3.0)[0] == 9.0
    assert tool.evaluate("hello", "double", 3.0)[0] == 6.0


def test_lse(tool):
    define(tool, "lse")
    x = np.random.default_rng(1).normal(size=20)
    assert tool.evaluate("lse", "primal", {"x": x.tolist()})[0] == pytest.approx(
        np.log(np.sum(np.exp(x))))
    check_gradient(tool, "lse", "primal", "gradient", lambda v: {"x": v.tolist()}, x)


def test_llsq(tool):
    define(tool, "llsq")
    x, n = np.random.default_rng(2).random(4), 9
    t = -1 + np.arange(n) * 2 / (n - 1)
    expected = 0.5 * np.sum((np.sign(t) - np.polynomial.polynomial.polyval(t, x)) ** 2)
    assert tool.evaluate("llsq", "primal", {"x": x.tolist(), "n": n})[0] == pytest.approx(
        expected)
    check_gradient(tool, "llsq", "primal", "gradient", lambda v: {"x": v.tolist(), "n": n}, x)


def test_ode(tool):
    define(tool, "ode")
    x, s = np.random.default_rng(3).random(5), 3
    y = np.asarray(tool.evaluate("ode", "primal", {"x": x.tolist(), "s": s})[0])
    assert y[0] == pytest.approx(2 * x[0])               # y_0' = x_0 from y_0(0) = 0
    gradient, _ = tool.evaluate("ode", "gradient", {"x": x.tolist(), "s": s})
    direction = np.random.default_rng(0).normal(size=5)

    def last(point):
        return tool.evaluate("ode", "primal", {"x": point.tolist(), "s": s})[0][-1]

    assert np.dot(gradient, direction) == pytest.approx(directional_fd(last, x, direction),
                                                         rel=1e-5)


def test_det(tool):
    define(tool, "det")
    A = np.random.default_rng(4).random((4, 4))

    def make(v):
        return {"A": v.reshape(-1).tolist(), "ell": 4}

    assert tool.evaluate("det", "primal", make(A))[0] == pytest.approx(np.linalg.det(A))
    gradient = check_gradient(tool, "det", "primal", "gradient", make, A)
    np.testing.assert_allclose(gradient, np.linalg.det(A) * np.linalg.inv(A).T, rtol=1e-8)


def test_gmm(tool):
    define(tool, "gmm")
    rng = np.random.default_rng(5)
    d, k, n = 3, 2, 10
    data = {"d": d, "k": k, "n": n, "m": 0, "gamma": 1.0,
            "x": rng.normal(size=(n, d)).tolist(), "alpha": rng.normal(size=k).tolist(),
            "mu": rng.random((k, d)).tolist(), "q": rng.normal(size=(k, d)).tolist(),
            "l": rng.normal(size=(k, d * (d - 1) // 2)).tolist()}
    jacobian, _ = tool.evaluate("gmm", "jacobian", data)
    assert set(jacobian) == {"alpha", "mu", "q", "l"}
    for key in ("alpha", "mu", "q", "l"):
        x = np.asarray(data[key])

        def make(v, key=key):
            return data | {key: v.tolist()}

        direction = np.random.default_rng(0).normal(size=x.shape)

        def primal(point, make=make):
            return tool.evaluate("gmm", "objective", make(point))[0]

        numeric = directional_fd(primal, x, direction)
        assert np.sum(np.asarray(jacobian[key]) * direction) == pytest.approx(numeric, rel=1e-5)


def test_kmeans(tool):
    define(tool, "kmeans")
    rng = np.random.default_rng(6)
    points = rng.random((30, 2))
    centroids = points[-3:] + 0.01
    data = {"points": points.tolist(), "centroids": centroids.tolist()}
    distances = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    assert tool.evaluate("kmeans", "cost", data)[0] == pytest.approx(distances.min(axis=1).sum())
    direction, _ = tool.evaluate("kmeans", "dir", data)
    nearest = distances.argmin(axis=1)
    counts = np.bincount(nearest, minlength=3)[:, None]
    jacobian = np.stack([2 * (counts[j, 0] * centroids[j] - points[nearest == j].sum(axis=0))
                         for j in range(3)])
    np.testing.assert_allclose(direction, jacobian / (2 * counts), rtol=1e-8)


def test_lstm(tool):
    define(tool, "lstm")
    rng = np.random.default_rng(7)
    layers, bits, chars = 1, 3, 5
    data = {"main_params": rng.random((2 * layers, 4 * bits)).tolist(),
            "extra_params": rng.random((3, bits)).tolist(),
            "state": rng.random((2 * layers, bits)).tolist(),
            "sequence": rng.integers(0, 2, (chars, bits)).astype(float).tolist()}
    jacobian, _ = tool.evaluate("lstm", "jacobian", data)
    assert len(jacobian) == 8 * layers * bits + 3 * bits
    params = np.concatenate([np.ravel(data["main_params"]), np.ravel(data["extra_params"])])

    def make(v):
        main = v[:8 * layers * bits].reshape(2 * layers, 4 * bits)
        return data | {"main_params": main.tolist(),
                       "extra_params": v[8 * layers * bits:].reshape(3, bits).tolist()}

    direction = np.random.default_rng(0).normal(size=params.shape)
    numeric = directional_fd(lambda p: tool.evaluate("lstm", "objective", make(p))[0],
                             params, direction)
    assert np.dot(jacobian, direction) == pytest.approx(numeric, rel=1e-5)


# ----- particle and saddle ---------------------------------------------------------------------
# One run per variant (a solve takes several nested gradients), from starts where the solver
# takes a few steps: GradBench's eta schedule makes any start whose first step is not already
# below 1e-5 (|gradient| > 1) take dozens to hundreds of steps unless |gradient| is just above 1.

ONCE = {"min_runs": 1, "min_seconds": 0}
VARIANTS = ("rr", "ff", "fr", "rf")


def descend(f, gradient, x):
    """GradBench's gradient descent (cpp/gradbench/gd.hpp), on numpy."""
    fx, gx, i, eta = f(x), gradient(x), 0, 1e-5
    while True:
        if math.sqrt(np.dot(gx, gx)) <= 1e-5:
            return x
        if i == 10:
            eta, i = eta * 2, 0
            continue
        x_prime = x - eta * gx
        if math.sqrt(np.dot(x - x_prime, x - x_prime)) <= 1e-5:
            return x
        fx_prime = f(x_prime)
        if fx_prime < fx:
            x, fx, gx, i = x_prime, fx_prime, gradient(x_prime), i + 1
        else:
            eta, i = eta / 2, 0


def particle_miss(w):
    """x_0(t_f)^2 by Euler with the force written out: sum of (x - c) / |x - c|^3."""
    charges = np.array([[10.0, 10.0 - w], [10.0, 0.0]])
    x, xdot, dt = np.array([0.0, 8.0]), np.array([0.75, 0.0]), 0.1
    while True:
        d = x - charges
        force = np.sum(d / np.linalg.norm(d, axis=1, keepdims=True) ** 3, axis=0)
        x_new = x + dt * xdot
        if x_new[1] <= 0:
            break
        x, xdot = x_new, xdot + dt * force
    x_tf = x - x[1] / xdot[1] * xdot
    return x_tf[0] ** 2


def particle_miss_derivative(w, h=1e-6):
    return (particle_miss(w + h) - particle_miss(w - h)) / (2 * h)


def test_particle(tool):
    define(tool, "particle")
    w0 = 0.21087     # |dJ/dw| = 1.012: six gradients
    expected = descend(lambda w: particle_miss(w[0]),
                       lambda w: np.array([particle_miss_derivative(w[0])]), np.array([w0]))[0]
    assert abs(expected - w0) > 4e-5                       # the solver did move
    for variant in VARIANTS:
        assert tool.evaluate("particle", variant, {"w": w0}, ONCE)[0] == pytest.approx(
            expected, abs=1e-10)


def test_saddle(tool):
    define(tool, "saddle")
    start = np.array([0.6, 0.8]) * 0.500035    # |gradient| = 1.00007: a few steps per solve

    def argmax(p1):
        return descend(lambda p2: -(p1 @ p1 - p2 @ p2), lambda p2: 2 * p2, start)

    r1 = descend(lambda p1: p1 @ p1 - argmax(p1) @ argmax(p1), lambda p1: 2 * p1, start)
    expected = [*r1, *argmax(r1)]
    assert np.all(np.abs(r1) < np.abs(start))              # the solvers did move
    for variant in VARIANTS:
        output = tool.evaluate("saddle", variant, {"start": start.tolist()}, ONCE)[0]
        np.testing.assert_allclose(output, expected, rtol=1e-12)


def _objectives():
    sys.path.insert(0, str(ROOT / "bench" / "gradbench"))
    import objectives

    return objectives


@pytest.mark.parametrize("variant", VARIANTS)
def test_particle_nested_gradient_against_central_differences(variant):
    """The outer gradient of particle's solve away from the optimum, in the variant's
    modes (pb.grad or pb.jvp over the Euler loop, pb.grad or pb.jacfwd inside it), through
    the whole loop (352 steps), against differences of the plain loop."""
    obj = _objectives()
    w = np.array([0.1])
    miss = obj.PARTICLE_MISS[variant[1]]
    assert miss(w) == pytest.approx(particle_miss(0.1), rel=1e-12)
    gradient = obj._outer_gradient(variant[0], miss)(w)
    assert gradient[0] == pytest.approx(particle_miss_derivative(0.1), rel=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_saddle_nested_gradient_through_the_inner_solver(variant):
    """d/dp1 of f(p1, argmax_p2 f(p1, p2)), differentiated through the inner solver's
    steps in the variant's modes, is 2 p1 (the inner argmax does not depend on p1)."""
    obj = _objectives()
    p1 = np.array([0.7, -0.2])
    start = np.array([1.0, 1.0])
    inner_max = obj.SADDLE_INNER_MAX[variant[1]]
    gradient = obj._outer_gradient(variant[0], inner_max)(p1, start)
    np.testing.assert_allclose(gradient, 2 * p1, rtol=1e-12)


def test_ba(tool):
    """The tool answers ba over the protocol with what GradBench's C++ reference answered
    for one small input (the input and the numbers: tests/test_gradbench_ba.py)."""
    from test_gradbench_ba import REFERENCE_JACOBIAN, REFERENCE_OBJECTIVE, SMALL_INPUT

    define(tool, "ba")
    objective, names = tool.evaluate("ba", "objective", SMALL_INPUT)
    assert "compile" in names
    assert objective["reproj_error"]["repeated"] == objective["w_err"]["repeated"] == 40
    assert objective["reproj_error"]["elements"] == pytest.approx(
        REFERENCE_OBJECTIVE["reproj_error"]["elements"], rel=1e-9)
    assert objective["w_err"]["element"] == pytest.approx(
        REFERENCE_OBJECTIVE["w_err"]["element"], rel=1e-12)
    jacobian, _ = tool.evaluate("ba", "jacobian", SMALL_INPUT)
    assert jacobian["rows"] == REFERENCE_JACOBIAN["rows"]
    assert jacobian["cols"] == REFERENCE_JACOBIAN["cols"]
    assert jacobian["vals"] == pytest.approx(REFERENCE_JACOBIAN["vals"], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("complicated", [False, True])
def test_ht(tool, complicated):
    """ht over the protocol: the objective and rows of the Jacobian the C++ reference
    printed for a tiny input (the input and the numbers: tests/test_gradbench_ht.py)."""
    from test_gradbench_ht import REFERENCE, tiny_input

    define(tool, "ht")
    data = tiny_input(complicated)
    expected = REFERENCE[complicated]
    objective, names = tool.evaluate("ht", "objective", data)
    np.testing.assert_allclose(objective, expected["objective"], rtol=1e-10, atol=1e-12)
    jacobian, _ = tool.evaluate("ht", "jacobian", data)
    np.testing.assert_allclose(np.array(jacobian)[[0, 4, 8]], expected["jacobian_rows"],
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("module", ["ht2", "no such module"])
def test_unknown_modules_are_declined_with_a_reason(tool, module):
    response = tool.send("define", module=module)
    assert response["success"] is False and response["error"]
