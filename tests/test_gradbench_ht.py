"""bench/gradbench/ht.py: GradBench's hand tracking, objective and Jacobian.

The objective is checked against a straightforward computation written independently
(the reference's loops: pose parameters column by column, Euler rotations as a product of
three matrices, absolutes bone by bone, every model vertex skinned, the global rotation by
Rodrigues' formula), on random models (random bone trees, mirrored or not); the Jacobian
against central differences of that computation, including the u columns of the
complicated variant; the layout (rows in point order x, y, z; 26 or 2 + 26 columns); and
the module's output against the numbers GradBench's C++ reference tool ("manual", commit
f26651a) printed for one tiny input of each variant.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "gradbench"))

from ht import THETA, Ht, jacobian, objective
from run import _jsonable

BONES = 22
HAND_PARENTS = [-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19, 0]


# ----- an independent computation --------------------------------------------------------

def euler_rotation(xzy):
    tx, tz, ty = xzy
    rx = np.array([[1, 0, 0], [0, np.cos(tx), -np.sin(tx)], [0, np.sin(tx), np.cos(tx)]])
    ry = np.array([[np.cos(ty), 0, np.sin(ty)], [0, 1, 0], [-np.sin(ty), 0, np.cos(ty)]])
    rz = np.array([[np.cos(tz), -np.sin(tz), 0], [np.sin(tz), np.cos(tz), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rodrigues(axis_angle):
    angle = np.linalg.norm(axis_angle)
    if angle < 1e-4:
        return np.eye(3)
    a = axis_angle / angle
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def pose_columns(theta):
    """The reference's to_pose_params: 3 x (bones + 3), filled column by column."""
    pose = np.zeros((3, BONES + 3), dtype=theta.dtype)
    pose[:, 0] = theta[0:3]
    pose[:, 1] = 1
    pose[:, 2] = theta[3:6]
    i_theta, column = 6, 5
    for _finger in range(5):
        for joint in range(2, 5):
            pose[0, column] = theta[i_theta]
            i_theta += 1
            if joint == 2:
                pose[1, column] = theta[i_theta]
                i_theta += 1
            column += 1
        column += 1
    return pose


def reference_residuals(theta, us, data):
    model = data["model"]
    pose = pose_columns(theta)
    absolutes = []
    positions = np.zeros((3, len(model["base_positions"])))
    base = np.asarray(model["base_positions"]).T                       # 4 x vertices
    weights = np.asarray(model["weights"])
    for b, parent in enumerate(model["parents"]):
        turn = np.eye(4)
        turn[:3, :3] = euler_rotation(pose[:, b + 3])
        relative = np.asarray(model["base_relatives"][b]) @ turn
        absolutes.append(relative if parent == -1 else absolutes[parent] @ relative)
        transform = absolutes[b] @ np.asarray(model["inverse_base_absolutes"][b])
        positions += (transform @ base)[:3] * weights[:, b]
    if model["is_mirrored"]:
        positions[0] *= -1
    rotation = rodrigues(pose[:, 0]) * pose[:, 1]
    positions = rotation @ positions + pose[:, 2:3]
    err = []
    for i, c in enumerate(data["correspondences"]):
        if len(us):
            a, b, cc = model["triangles"][c]
            u = us[i]
            hand = u[0] * positions[:, a] + u[1] * positions[:, b] \
                + (1 - u[0] - u[1]) * positions[:, cc]
        else:
            hand = positions[:, c]
        err.extend(np.asarray(data["points"][i]) - hand)
    return np.array(err)


def central_jacobian(data, step=1e-6):
    """d residuals / d (us of the row's point, theta), by central differences."""
    theta = np.asarray(data["theta"], dtype=np.float64)
    us = np.asarray(data["us"], dtype=np.float64).reshape(-1, 2)
    columns = []
    if len(us):
        for k in range(2):
            du = np.zeros_like(us)
            du[:, k] = step
            columns.append((reference_residuals(theta, us + du, data["data"])
                            - reference_residuals(theta, us - du, data["data"])) / (2 * step))
    for k in range(THETA):
        dt = np.zeros(THETA)
        dt[k] = step
        columns.append((reference_residuals(theta + dt, us, data["data"])
                        - reference_residuals(theta - dt, us, data["data"])) / (2 * step))
    return np.stack(columns, axis=1)


# ----- inputs ----------------------------------------------------------------------------

def rigid(rng, scale=1.0):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    m = np.eye(4)
    m[:3, :3] = q
    m[:3, 3] = rng.normal(scale=scale, size=3)
    return m


def random_input(n, complicated, parents=HAND_PARENTS, mirrored=False, seed=0):
    """An eval input (as the eval sends it) for a random model of ``parents``."""
    rng = np.random.default_rng(seed)
    vertices = 40
    weights = rng.uniform(size=(vertices, BONES)) * (rng.uniform(size=(vertices, BONES)) < 0.2)
    weights[:, 0] += 0.1
    weights /= weights.sum(axis=1, keepdims=True)
    positions = np.concatenate([rng.normal(size=(vertices, 3)), np.ones((vertices, 1))], axis=1)
    triangles = rng.integers(0, vertices, size=(30, 3))
    model = {"bone_count": BONES, "bone_names": [f"b{i}" for i in range(BONES)],
             "parents": list(parents),
             "base_relatives": [rigid(rng, 0.3).tolist() for _ in range(BONES)],
             "inverse_base_absolutes": [rigid(rng, 0.3).tolist() for _ in range(BONES)],
             "base_positions": positions.tolist(), "weights": weights.tolist(),
             "triangles": triangles.tolist(), "is_mirrored": mirrored}
    correspondences = rng.integers(0, 30 if complicated else vertices, size=n)
    us = rng.uniform(0, 0.5, size=(n, 2)).tolist() if complicated else []
    return {"theta": rng.normal(scale=0.5, size=THETA).tolist(),
            "data": {"model": model, "correspondences": correspondences.tolist(),
                     "points": rng.normal(size=(n, 3)).tolist()},
            "us": us, "min_runs": 1, "min_seconds": 0}


def random_parents(seed):
    """A random bone tree, parents before children (levels with scattered parents)."""
    rng = np.random.default_rng(seed)
    return [-1] + [int(rng.integers(0, i)) for i in range(1, BONES)]


def prepared(data):
    module = Ht()
    return module, module.prepare("objective", data)[0]


# ----- tests -----------------------------------------------------------------------------

CASES = [pytest.param(HAND_PARENTS, False, id="hand"),
         pytest.param(random_parents(1), True, id="random-tree-mirrored"),
         pytest.param(random_parents(2), False, id="random-tree")]


@pytest.mark.parametrize("complicated", [False, True])
@pytest.mark.parametrize(("parents", "mirrored"), CASES)
def test_objective_matches_the_reference_loops(parents, mirrored, complicated):
    data = random_input(7, complicated, parents, mirrored)
    _, problem = prepared(data)
    expected = reference_residuals(np.asarray(data["theta"]), np.asarray(data["us"]),
                                   data["data"])
    np.testing.assert_allclose(objective(problem), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("complicated", [False, True])
@pytest.mark.parametrize(("parents", "mirrored"), CASES)
def test_jacobian_matches_central_differences(parents, mirrored, complicated):
    data = random_input(5, complicated, parents, mirrored, seed=3)
    _, problem = prepared(data)
    result = jacobian(problem)
    np.testing.assert_allclose(result, central_jacobian(data), rtol=1e-6, atol=1e-7)


def test_jacobian_in_chunks_equals_one_pass():
    data = random_input(11, True, seed=4)
    _, problem = prepared(data)
    np.testing.assert_array_equal(jacobian(problem, chunk=3), jacobian(problem, chunk=100))


@pytest.mark.parametrize("complicated", [False, True])
def test_module_output_layout(complicated):
    n = 4
    data = random_input(n, complicated, seed=5)
    module, problem = prepared(data)
    # what the eval receives: run.py lists a function's arrays after timing it
    residuals = _jsonable(module.functions["objective"](problem))
    rows = _jsonable(module.functions["jacobian"](problem))
    assert isinstance(residuals, list) and len(residuals) == 3 * n
    assert all(isinstance(r, float) for r in residuals)
    assert isinstance(rows, list) and len(rows) == 3 * n
    assert all(len(row) == THETA + (2 if complicated else 0) for row in rows)
    # theta 3..5 is the global translation: d err[3i + j] / d t_k = -(j == k)
    translation = np.array(rows)[:, (2 if complicated else 0) + 3:][:, :3]
    np.testing.assert_allclose(translation, -np.tile(np.eye(3), (n, 1)), rtol=0, atol=1e-15)


def test_still_global_rotation_takes_the_identity_branch():
    data = random_input(4, True, seed=6)
    data["theta"][0:3] = [0.0, 0.0, 0.0]
    _, problem = prepared(data)
    expected = reference_residuals(np.asarray(data["theta"]), np.asarray(data["us"]),
                                   data["data"])
    np.testing.assert_allclose(objective(problem), expected, rtol=1e-12, atol=1e-12)
    result = jacobian(problem)
    assert np.all(np.isfinite(result))
    # the reference's rotation is the identity for |r| < 1e-4: no derivative there
    np.testing.assert_array_equal(result[:, 2:5], 0)
    np.testing.assert_allclose(result[:, 5:], central_jacobian(data)[:, 5:],
                               rtol=1e-6, atol=1e-7)


# ----- GradBench's C++ reference tool on a tiny input ------------------------------------

def tiny_input(complicated):
    """A deterministic 5-vertex, 3-point input on the hand's bone tree (no RNG)."""
    def transform(b, phase):
        m = np.eye(4)
        m[:3, :3] = rodrigues(0.6 * np.sin(b + phase + np.arange(3)))
        m[:3, 3] = 0.1 * np.cos(b * phase + np.arange(3))
        return m.tolist()

    vertices = np.arange(5)[:, None]
    weights = np.maximum(0, np.sin(3 * vertices + np.arange(BONES))) + 0.05
    weights /= weights.sum(axis=1, keepdims=True)
    positions = np.concatenate([np.sin(vertices + np.arange(3)), np.ones((5, 1))], axis=1)
    model = {"bone_count": BONES, "bone_names": [f"b{i}" for i in range(BONES)],
             "parents": HAND_PARENTS,
             "base_relatives": [transform(b, 1.0) for b in range(BONES)],
             "inverse_base_absolutes": [transform(b, 2.5) for b in range(BONES)],
             "base_positions": positions.tolist(), "weights": weights.tolist(),
             "triangles": [[0, 1, 2], [2, 3, 4], [4, 0, 1]], "is_mirrored": False}
    return {"theta": (0.4 * np.sin(1.7 * np.arange(THETA) + 0.5)).tolist(),
            "data": {"model": model, "correspondences": [2, 0, 1] if complicated else [4, 1, 3],
                     "points": (0.5 * np.cos(np.arange(9) * 0.9)).reshape(3, 3).tolist()},
            "us": [[0.2, 0.3], [0.5, 0.1], [0.1, 0.6]] if complicated else [],
            "min_runs": 1, "min_seconds": 0}


# tools/manual/bin/ht on tiny_input(...) at GradBench f26651a: the objective, and rows
# 0, 4 and 8 of the Jacobian
REFERENCE = {
    False: {
        "objective": [1.556806796695, 0.3310639954563, -0.6748382765208, -0.5443665184443,
                      -1.77920697318, -0.01875307261718, 1.354164351239, 0.4243931067381,
                      0.4804389413523],
        "jacobian_rows": [
            [0.1098629538023, -0.4176931806217, -0.3088937181778, -1, 0, 0, 0.1347121129307,
             0.1396668445015, 0.07552946819308, 0.00605941819858, -0.03935751734285,
             0.03896204155939, 0.001414956417689, 0.08198186249628, 0.002423027421866,
             -0.01735233875281, 0.004278155032006, 0.002889400998252, 0.0237565830471,
             0.1704538916079, 0.09809570409549, 0.04629879451685, 0.0142692073169,
             -0.03279932189568, 0.01225409097726, 0.0430334915523],
            [-0.1862596943207, -0.06395673485992, -0.374548728448, 0, -1, 0, 0.06740025661952,
             -0.03915472241386, 0.02090877778079, -0.01177229454065, 0.003000183165281,
             0.004207420492172, 0.003075989661336, 0.001674654884801, -0.2818698227314,
             -0.04220806678353, -0.1621380914693, -0.0133756607914, 0.005539229159016,
             0.002063358315521, 0.01214054063156, -0.002344735478329, -0.003532966516377,
             0.05699829333306, -0.0003572116214269, -0.001098286753592],
            [0.3547010898344, -0.7313153655981, 0.1250793213817, 0, 0, -1, 0.03815786822336,
             0.07061560503158, 0.06669929114908, 0.06029021630544, -0.1254759489019,
             0.02673866613176, -0.01508136718616, -0.004996742062388, 0.2511906247481,
             0.008521718582784, 0.1391073545217, -0.002831974026058, -0.001137421389963,
             0.02296317138487, 0.00704603021356, 0.006664515932269, -0.2093682993329,
             0.05185006110815, -0.05253162198372, -0.004899802033935],
        ],
    },
    True: {
        "objective": [0.4664734250873, -0.5914934714238, -0.3187248260471, -0.603888236999,
                      -1.203105928448, 0.03652222132408, 1.303625574018, 0.4056644651529,
                      0.3316258462208],
        "jacobian_rows": [
            [1.149137244131, -0.5700785876769, -0.0891233027558, 0.005156538703375,
             0.5534062624897, -1, 0, 0, -0.03582315644105, 0.01562730738987, -0.04142790498161,
             -0.04993992486709, -0.02157276385633, -0.01122566097292, -0.01960276428272,
             -0.01277274818194, -0.02609570332261, 0.1791836868442, -0.04269225350741,
             -0.03007040852069, 0.004041521066739, 0.04484640313766, 0.003175455814045,
             -0.006967504450047, -0.0555972096256, 0.0354738154603, -0.02237589813309,
             -0.02514344862861],
            [-0.2529129554282, -0.7806194693836, -0.2299226624356, -0.07672036954864,
             -0.4409799279626, 0, -1, 0, 0.07035215308946, -0.04101812580275, 0.003032877800823,
             -0.001033352974229, 0.000979153977158, -0.03520709183382, 0.02071473636655,
             0.01311930641375, -0.03515002436722, -0.005914548958064, -0.01946941484121,
             -0.001561220703483, 0.07938140705964, 0.01134966958496, 0.04381978140739,
             -0.0002367544039208, -0.001390985407084, 0.02902691029933, -0.008076993739512,
             -0.01343155416772],
            [1.461871101727, 0.7375005132604, 0.3302188828252, -0.6844350425422, 0.1167679888713,
             0, 0, -1, 0.0501722388718, 0.0920694366038, 0.06492223017981, 0.03742677900039,
             -0.115811744311, 0.05205176341255, -0.05034440501246, -0.02774269066854,
             0.1549617694348, 0.005798395771047, 0.08532161209463, -0.001703959476695,
             -0.005294528571746, 0.0945413289975, 0.02452071299904, 0.01006136460474,
             -0.1397349533272, 0.04821351943421, -0.0507005447801, -0.01756034669917],
        ],
    },
}


@pytest.mark.parametrize("complicated", [False, True])
def test_matches_the_cpp_reference_on_a_tiny_input(complicated):
    expected = REFERENCE[complicated]
    module, problem = prepared(tiny_input(complicated))
    np.testing.assert_allclose(module.functions["objective"](problem), expected["objective"],
                               rtol=1e-10, atol=1e-12)
    rows = np.array(module.functions["jacobian"](problem))[[0, 4, 8]]
    np.testing.assert_allclose(rows, expected["jacobian_rows"], rtol=1e-10, atol=1e-12)
