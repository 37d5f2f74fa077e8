"""bench/gradbench/ba.py: GradBench's bundle adjustment, objective and sparse Jacobian.

The objective is checked against a per-observation loop written independently (rotation
as a matrix, I + sin(t) K + (1 - cos(t)) K^2); the sparse Jacobian, rebuilt as a dense
matrix, against central differences of that loop's residual vector; the layout against
ADBench's (CSR rows of 15 + 1 entries); and the module's output against the numbers
GradBench's C++ reference tool ("manual", commit f26651a) printed for one small input.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "gradbench"))

from ba import Ba, Problem, objective, sparse_jacobian


def cross_matrix(v):
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def reference_residuals(cams, points, weights, obs, feats):
    """(reproj_err, w_err), one observation at a time."""
    reproj = []
    for (c, x), w, feat in zip(obs, weights, feats, strict=True):
        cam = cams[c]
        r = cam[:3]
        theta = np.linalg.norm(r)
        if theta == 0:   # the reference's branch: first-order rotation
            rotation = np.eye(3) + cross_matrix(r)
        else:
            k = cross_matrix(r / theta)
            rotation = np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k
        in_camera = rotation @ (points[x] - cam[3:6])
        q = in_camera[:2] / in_camera[2]
        rsq = q @ q
        q = q * (1 + cam[9] * rsq + cam[10] * rsq ** 2)
        reproj.extend(w * (q * cam[6] + cam[7:9] - feat))
    return np.array(reproj), 1 - weights ** 2


def small_problem(p, seed=0):
    """Distinct random cameras, points, weights and features; camera 0 does not turn."""
    rng = np.random.default_rng(seed)
    n, m = 3, 4
    cams = np.concatenate([rng.normal(scale=0.5, size=(n, 3)),          # rotation
                           rng.normal(size=(n, 3)),                     # centre
                           rng.uniform(300, 500, size=(n, 1)),          # focal length
                           rng.normal(size=(n, 2)),                     # principal point
                           rng.normal(scale=0.05, size=(n, 2))], axis=1)  # distortion
    cams[0, :3] = 0
    points = rng.normal(size=(m, 3)) + [0, 0, 8]    # in front of every camera
    obs = np.stack([rng.integers(0, n, p), rng.integers(0, m, p)], axis=1)
    obs[:n, 0] = np.arange(n)                        # every camera is seen
    return Problem(cams, points, rng.uniform(0.5, 1.5, p), obs, rng.normal(size=(p, 2)))


def dense(rows, cols, vals, shape):
    matrix = np.zeros(shape)
    for row in range(shape[0]):
        for k in range(rows[row], rows[row + 1]):
            matrix[row, cols[k]] += vals[k]
    return matrix


@pytest.mark.parametrize("p", [7, 600])   # 600: above the native kernels' minimum size
def test_objective_matches_a_per_observation_loop(p):
    problem = small_problem(p)
    reproj_err, w_err = objective(problem)
    expected = reference_residuals(problem.cams, problem.points, problem.weights,
                                   problem.obs, problem.feats)
    assert reproj_err.shape == (2 * p,) and w_err.shape == (p,)
    np.testing.assert_allclose(reproj_err, expected[0], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(w_err, expected[1], rtol=1e-14)


@pytest.mark.parametrize("p", [7, 600])
def test_sparse_jacobian_matches_central_differences(p):
    problem = small_problem(p)
    n, m = problem.n, problem.m
    rows, cols, vals = sparse_jacobian(problem)
    shape = (3 * p, 11 * n + 3 * m + p)
    analytic = dense(rows, cols, vals, shape)

    params = np.concatenate([problem.cams.ravel(), problem.points.ravel(), problem.weights])

    def residuals(flat):
        cams = flat[:11 * n].reshape(n, 11)
        points = flat[11 * n:11 * n + 3 * m].reshape(m, 3)
        return np.concatenate(reference_residuals(cams, points, flat[11 * n + 3 * m:],
                                                  problem.obs, problem.feats))

    rng = np.random.default_rng(1)
    directions = np.eye(shape[1]) if p < 50 else rng.normal(size=(6, shape[1]))
    for direction in directions:
        step = 1e-6 * direction
        numeric = (residuals(params + step) - residuals(params - step)) / 2e-6
        np.testing.assert_allclose(analytic @ direction, numeric, rtol=1e-5, atol=1e-5)


def test_sparse_layout_is_adbench_csr():
    p = 7
    problem = small_problem(p)
    n, m = problem.n, problem.m
    rows, cols, vals = sparse_jacobian(problem)
    assert rows.shape == (3 * p + 1,) and cols.shape == vals.shape == (31 * p,)
    assert list(rows[:2 * p + 1]) == [15 * k for k in range(2 * p + 1)]
    assert list(rows[2 * p:]) == list(range(30 * p, 31 * p + 1))
    for i, (c, x) in enumerate(problem.obs):
        expected = [*range(11 * c, 11 * c + 11), *range(11 * n + 3 * x, 11 * n + 3 * x + 3),
                    11 * n + 3 * m + i]
        assert list(cols[30 * i:30 * i + 15]) == expected          # row 2i: d reproj x
        assert list(cols[30 * i + 15:30 * i + 30]) == expected     # row 2i + 1: d reproj y
    assert list(cols[30 * p:]) == list(range(11 * n + 3 * m, 11 * n + 3 * m + p))
    np.testing.assert_allclose(vals[30 * p:], -2 * problem.weights)


# One small input in the eval's format and what GradBench's C++ reference answered.
SMALL_INPUT = {
    "n": 3, "m": 5, "p": 40,
    "cam": [-0.758453, -1.109613, -0.845551, 34.556073, 39.676747, 53.881673, 419.194514,
            5.864426, -8.51887, 0.087812, 0.002739],
    "x": [7.203245, 0.001144, 3.023326], "w": 0.417022, "feat": [271.760969, 834.209256]}
REFERENCE_OBJECTIVE = {
    "reproj_error": {"elements": [0.10133583791450886, -0.06896776592424401], "repeated": 40},
    "w_err": {"element": 0.826092651516, "repeated": 40}}
REFERENCE_JACOBIAN = {
    "rows": [*range(0, 450, 15), 1240],
    "cols": [*range(11), 33, 34, 35, 48] * 2 + [87],
    "vals": [-461.4463210015993, 178.8679280144455, -19.423916472206248, -3.0615983420410315,
             6.392457556226442, -3.340282281299017, 0.26476024920703156, 0.417022, 0.0,
             243.62824566083003, 676.4867782658688, 3.0615983420410315, -6.392457556226442,
             3.340282281299017, 0.24299878163378708, -803.7436233648792, -309.5954175234488,
             604.7802846625028, -15.049628170340545, 6.248486312079824, 3.2194799516049235,
             0.8381960857313306, 0.0, 0.417022, 771.2949451366334, 2141.6680611599554,
             15.049628170340545, -6.248486312079824, -3.2194799516049235,
             -0.16538160078960118, -0.834044]}


def test_module_output_matches_the_reference_tool():
    module = Ba()
    outputs = {name: module.functions[name](*module.prepare(name, SMALL_INPUT))
               for name in ("objective", "jacobian")}
    objective_out = outputs["objective"]
    assert objective_out["reproj_error"]["repeated"] == 40
    assert objective_out["w_err"]["repeated"] == 40
    assert objective_out["reproj_error"]["elements"] == pytest.approx(
        REFERENCE_OBJECTIVE["reproj_error"]["elements"], rel=1e-9)
    assert objective_out["w_err"]["element"] == pytest.approx(0.826092651516, rel=1e-12)
    jacobian_out = outputs["jacobian"]
    assert jacobian_out["rows"] == REFERENCE_JACOBIAN["rows"]
    assert jacobian_out["cols"] == REFERENCE_JACOBIAN["cols"]
    assert all(type(v) is int for v in jacobian_out["rows"] + jacobian_out["cols"])
    assert jacobian_out["vals"] == pytest.approx(REFERENCE_JACOBIAN["vals"], rel=1e-9,
                                                 abs=1e-12)
