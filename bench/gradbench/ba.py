"""GradBench's ``ba`` (bundle adjustment) for pullback: objective and sparse Jacobian.

The eval (``evals/ba/README.md`` of GradBench; checked against its C++ ``manual`` tool)
sends one camera, one point, one weight and one feature and the sizes n, m, p; the tool
builds n cameras, m points and p observations from them (observation i sees camera
i mod n and point i mod m) and must not exploit the repetition.

Residuals, per observation i with camera c = cams[obs[i, 0]] and point X = X[obs[i, 1]]:
    Xcam = Rodrigues(c[0:3]) (X - c[3:6]);  q = Xcam[:2] / Xcam[2]
    q = q (1 + k1 |q|^2 + k2 |q|^4) with (k1, k2) = c[9:11];  proj = q f + (u0, v0)
    reproj_err[2i : 2i+2] = w_i (proj - feat_i),   w_err[i] = 1 - w_i^2

How the sparse Jacobian comes out of reverse mode: ``reprojection_error`` is written
over *columns* of gathered per-observation arrays (one 1-d array per camera parameter,
point coordinate and weight, entry i belonging to observation i), so every statement is
elementwise and pullback fuses the whole function into native kernels.  Residual i reads
only entry i of every column, so the gradient of sum(ex) with respect to the columns
holds, at entry i, the partial derivatives of ex_i: one vector-Jacobian product with a
seed of ones per residual component (x, y; and w_err's) gives all p rows of that
component at once.  Cameras and points shared by several observations are not summed
over because the gradient is taken with respect to the gathered copies.  The rows are
then laid out as ADBench's ``BASparseMat`` does (CSR): per observation two rows of
11 camera + 3 point + 1 weight entries, then one row per weight.
"""

from __future__ import annotations

import numpy as np

import pullback as pb

CAMERA_PARAMS = 11
BLOCK = CAMERA_PARAMS + 3 + 1   # nonzeros in one reprojection row: camera, point, weight
SHOWN = 2 * BLOCK               # the output shows the first 30 entries and the last one


def reprojection_error(r0, r1, r2, c0, c1, c2, f, u0, v0, k1, k2, x0, x1, x2, w,
                       feat_x, feat_y):
    """Weighted reprojection error (ex, ey) of each observation; every argument is a
    column over observations (or a number), every operation elementwise."""
    p0 = x0 - c0
    p1 = x1 - c1
    p2 = x2 - c2
    # Rodrigues' rotation of p by r.  The reference branches on |r|^2 != 0 (and then
    # uses the first-order rotation p + r x p); both branches are computed and blended
    # with a 0/1 mask so that the function stays elementwise.  The mask is sign(|r|^2),
    # a float (a comparison's boolean would keep the kernel off the native road), and
    # `safe_sq` keeps the unused branch finite where |r| = 0, so that its gradient
    # (times 0) is 0, not nan.
    sqtheta = r0 * r0 + r1 * r1 + r2 * r2
    turning = np.sign(sqtheta)
    still = 1 - turning
    safe_sq = sqtheta + still
    theta = np.sqrt(safe_sq)
    costheta = np.cos(theta)
    sintheta = np.sin(theta)
    a0 = r0 / theta
    a1 = r1 / theta
    a2 = r2 / theta
    along = (a0 * p0 + a1 * p1 + a2 * p2) * (1 - costheta)
    big0 = p0 * costheta + (a1 * p2 - a2 * p1) * sintheta + a0 * along
    big1 = p1 * costheta + (a2 * p0 - a0 * p2) * sintheta + a1 * along
    big2 = p2 * costheta + (a0 * p1 - a1 * p0) * sintheta + a2 * along
    small0 = p0 + (r1 * p2 - r2 * p1)
    small1 = p1 + (r2 * p0 - r0 * p2)
    small2 = p2 + (r0 * p1 - r1 * p0)
    cam0 = big0 * turning + small0 * still
    cam1 = big1 * turning + small1 * still
    cam2 = big2 * turning + small2 * still
    # perspective division, radial distortion, focal length and principal point
    q0 = cam0 / cam2
    q1 = cam1 / cam2
    rsq = q0 * q0 + q1 * q1
    distortion = 1 + k1 * rsq + k2 * rsq * rsq
    proj0 = q0 * distortion * f + u0
    proj1 = q1 * distortion * f + v0
    return w * (proj0 - feat_x), w * (proj1 - feat_y)


def weight_error(w):
    return 1 - w * w


class Problem:
    """A bundle adjustment problem in ADBench's arrays: ``cams`` (n, 11), ``points``
    (m, 3), ``weights`` (p,), ``obs`` (p, 2) camera and point index per observation,
    ``feats`` (p, 2)."""

    def __init__(self, cams, points, weights, obs, feats):
        self.cams = np.asarray(cams, dtype=np.float64)
        self.points = np.asarray(points, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.obs = np.asarray(obs, dtype=np.int64)
        self.feats = np.asarray(feats, dtype=np.float64)
        self.n, self.m, self.p = len(self.cams), len(self.points), len(self.weights)

    @classmethod
    def from_input(cls, data):
        """The eval's input expanded: n copies of its camera, m of its point, p of its
        weight and feature; observation i sees camera i mod n and point i mod m."""
        n, m, p = int(data["n"]), int(data["m"]), int(data["p"])
        observation = np.arange(p)
        return cls(np.tile(data["cam"], (n, 1)), np.tile(data["x"], (m, 1)),
                   np.full(p, float(data["w"])),
                   np.stack([observation % n, observation % m], axis=1),
                   np.tile(data["feat"], (p, 1)))

    def columns(self):
        """The arguments of ``reprojection_error``: gathered per-observation columns."""
        cams = np.ascontiguousarray(self.cams.T)[:, self.obs[:, 0]]      # (11, p)
        points = np.ascontiguousarray(self.points.T)[:, self.obs[:, 1]]  # (3, p)
        feats = np.ascontiguousarray(self.feats.T)
        return (*cams, *points, self.weights, *feats)


compiled_reprojection_error = pb.compile(reprojection_error)   # native fused kernels
_weight_gradient = pb.grad(pb.compile(weight_error))


def objective(problem):
    """(reproj_err of length 2p, w_err of length p), as the reference computes them."""
    ex, ey = compiled_reprojection_error(*problem.columns())
    return np.stack([ex, ey], axis=1).reshape(-1), weight_error(problem.weights)


def sparse_jacobian(problem):
    """The Jacobian of (reproj_err, w_err) w.r.t. (cams, X, w) in ADBench's CSR layout.

    Returns ``(rows, cols, vals)``: ``rows`` has 3p + 1 offsets into ``cols``/``vals``;
    row 2i (2i + 1) holds d reproj_err[2i] (resp. [2i + 1]) w.r.t. the 11 parameters of
    observation i's camera, its point's 3 coordinates and w_i, in that order; row 2p + i
    holds d w_err[i] / d w_i.
    """
    n, m, p = problem.n, problem.m, problem.p
    _, pullback = pb.vjp(compiled_reprojection_error, *problem.columns())
    ones, zeros = np.ones(p), np.zeros(p)
    x_row = pullback((ones, zeros))[:BLOCK]   # the feature columns (the last two) are data
    y_row = pullback((zeros, ones))[:BLOCK]

    vals = np.empty(2 * BLOCK * p + p)
    # one component's rows side by side, then transposed into per-observation order
    vals[:2 * BLOCK * p].reshape(p, 2 * BLOCK)[:] = np.array([*x_row, *y_row]).T
    vals[2 * BLOCK * p:] = _weight_gradient(problem.weights)

    cols = np.empty(2 * BLOCK * p + p, dtype=np.int32)   # int as in ADBench: half the bytes
    pairs = cols[:2 * BLOCK * p].reshape(p, 2, BLOCK)   # observation, component, entry
    pairs[:, :, :CAMERA_PARAMS] = (CAMERA_PARAMS * problem.obs[:, 0, None, None]
                                   + np.arange(CAMERA_PARAMS))
    first_point = CAMERA_PARAMS * n
    pairs[:, :, CAMERA_PARAMS:BLOCK - 1] = (first_point + 3 * problem.obs[:, 1, None, None]
                                            + np.arange(3))
    weight_cols = cols[2 * BLOCK * p:]
    weight_cols[:] = np.arange(first_point + 3 * m, first_point + 3 * m + p)
    pairs[:, :, BLOCK - 1] = weight_cols[:, None]

    rows = np.empty(3 * p + 1, dtype=np.int32)
    rows[:2 * p + 1] = BLOCK * np.arange(2 * p + 1)
    rows[2 * p + 1:] = BLOCK * 2 * p + np.arange(1, p + 1)
    return rows, cols, vals


def _shown(values):
    """The part of a list the eval compares: its first 30 entries and its last."""
    return [*values[:SHOWN].tolist(), values[-1].item()]


class Ba:
    """The ``ba`` module: ``prepare`` builds the problem, the functions return the
    eval's output format (the reference's: repeated blocks shown once)."""

    def __init__(self):
        self.functions = {"objective": self.objective, "jacobian": self.jacobian}

    def prepare(self, function, data):
        return (Problem.from_input(data),)

    def objective(self, problem):
        reproj_err, w_err = objective(problem)
        return {"reproj_error": {"elements": reproj_err[:2].tolist(), "repeated": problem.p},
                "w_err": {"element": float(w_err[0]), "repeated": problem.p}}

    def jacobian(self, problem):
        rows, cols, vals = sparse_jacobian(problem)
        return {"rows": _shown(rows), "cols": _shown(cols), "vals": _shown(vals)}
