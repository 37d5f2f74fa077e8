"""GradBench's ``ht`` (hand tracking) for pullback: objective and Jacobian.

The eval (``evals/ht/README.md`` of GradBench; its C++ reference ``cpp/gradbench/evals/
ht.hpp``, checked against the ``manual`` tool) sends a hand model (22 bones with parents,
base relative and inverse base absolute 4x4 transforms, vertices with per-bone skinning
weights, triangles), the 26 pose parameters ``theta``, data points with their
correspondences and, in the complicated variant, barycentric ``us`` (an empty list in the
simple variant).  Residual i is ``points[i] - hand point i`` where the hand point is the
skinned, globally posed model vertex ``correspondences[i]`` (simple), or
``u0 P_a + u1 P_b + (1 - u0 - u1) P_c`` over the posed vertices of triangle
``correspondences[i]`` (complicated).  The objective is the 3n residuals in point order;
the Jacobian is 3n rows of 26 (simple) or 2 + 26 (complicated: d/du_i[0], d/du_i[1] of
the row's own point, then theta) entries, as the reference lays it out.

The model, posed (``theta`` -> pose parameters -> Euler rotations per bone -> relative,
absolute and skinning transforms -> linear blend skinning -> global angle-axis rotation,
scale and translation), is ordinary numpy in ``make_hand``; pullback differentiates it.

How the Jacobian is computed: forward mode, one batched tangent pass (``pb.jacfwd``) with a
direction per column: the 26 pose parameters and, in the complicated variant, two more,
``(du0, du1)`` added to *every* point's ``us`` (``complicated_shifted``): point i reads only
its own ``us``, so the tangent of its residuals along "all u0 move together" is d residual_i
/ d u_i0, the reference's first column.  The bone chain (22 bones of 4x4 products) is
computed once per chunk of points, with 26-28 tangents riding along in each numpy call
(the structural rules have batched forms, ``primitives.BATCHED_JVPS``).  The previous
version took reverse mode over one copy of theta per point (so that a pullback per
coordinate gives rows), which recomputed the chain per point: 6-8x slower in one A/B run
(100 and 192 points: 14.4 and 28.8 ms against 2.3 and 3.7 ms).

Computed as the reference does, with two rearrangements that change only rounding: a
vertex is skinned as (sum_b w_b T_b) x rather than sum_b w_b (T_b x), and only the
vertices the points use are skinned (per point), not the whole model.  The bones are
handled in order of depth, a level of the tree per batched matmul.
"""

from __future__ import annotations

import numpy as np

import pullback as pb
from pullback import nd

THETA = 26         # global rotation (3), global translation (3), 5 fingers x 4
CHUNK = 256        # points per batched tangent pass of the Jacobian (bounds the memory)


def pose_selection(bone_count):
    """The pose parameters as a linear map of theta: ``(selection, offset)`` with
    pose = theta @ selection + offset, reshaped to (bone_count + 3, 3) columns.

    Column 0 is the global rotation (theta 0..2), 1 the scale (ones), 2 the global
    translation (theta 3..5), 3 + b the Euler angles of bone b: for each of the 5 fingers,
    its bones 2..4 take one angle each and bone 2 a second one (theta 6..25, in order);
    the others stay zero.  (A 0/1 matrix rather than an index: a matmul's gradient is
    another matmul, an index's a scatter-add.)
    """
    selection = np.zeros((THETA, bone_count + 3, 3))
    offset = np.zeros((bone_count + 3, 3))
    for k in range(3):
        selection[k, 0, k] = 1
        selection[3 + k, 2, k] = 1
    offset[1] = 1
    next_theta, column = 6, 5
    for _finger in range(5):
        for joint in range(2, 5):
            selection[next_theta, column, 0] = 1
            next_theta += 1
            if joint == 2:
                selection[next_theta, column, 1] = 1
                next_theta += 1
            column += 1
        column += 1
    return selection, offset


def depth_levels(parents):
    """The bones in order of depth in the tree, for computing absolutes a level at a time.

    Returns ``(order, levels, level_parents)``: the bones, level after level (``order``);
    each level's part of that order (a slice); and where its bones' parents are in it: a
    slice when they are consecutive (one parent for all: a one-element slice, which
    broadcasts), else an index array.
    """
    depth = []
    for parent in parents:   # a parent comes before its children, as the reference assumes
        depth.append(0 if parent == -1 else depth[parent] + 1)
    by_depth = [np.flatnonzero(np.array(depth) == d) for d in range(max(depth) + 1)]
    order = np.concatenate(by_depth)
    position = np.argsort(order)
    levels, level_parents, start = [], [], 0
    for bones in by_depth:
        levels.append(slice(start, start + len(bones)))
        start += len(bones)
        if parents[bones[0]] == -1:   # the roots
            level_parents.append(None)
            continue
        where = position[np.array(parents)[bones]]
        if np.all(where == where[0]):
            level_parents.append(slice(int(where[0]), int(where[0]) + 1))
        elif np.all(np.diff(where) == 1):
            level_parents.append(slice(int(where[0]), int(where[-1]) + 1))
        else:
            level_parents.append(where)
    return order, levels, level_parents


class Hand:
    """One hand model's residual functions, compiled by pullback.

    ``simple(theta, points, x, w)`` and
    ``complicated(theta, us, points, xa, wa, xb, wb, xc, wc)`` -> residuals (n, 3), where
    ``theta`` is (m, 26) with m = 1 (shared) or m = n (one copy per point), ``points``
    (n, 3), ``us`` (n, 2), and each ``x`` (n, 4) / ``w`` (n, bones) is the homogeneous base
    position and skinning weights of point i's vertex (of its triangle's vertex a, b, c),
    the weights' columns in the order ``order`` (bones by depth, see ``depth_levels``).
    """

    def __init__(self, parents, base_relatives, inverse_base_absolutes, is_mirrored):
        self.simple, self.complicated, self.complicated_shifted, self.order = make_hand(
            parents, base_relatives, inverse_base_absolutes, is_mirrored)


def make_hand(parents, base_relatives, inverse_base_absolutes, is_mirrored):
    """``(simple, complicated, order)`` of ``Hand``: the residual functions, compiled, of
    one model with its bones rearranged in ``order`` (by depth)."""
    parents = [int(p) for p in parents]
    bones = len(parents)
    order, levels, level_parents = depth_levels(parents)
    base_relatives = np.asarray(base_relatives, dtype=np.float64)[order]
    inverse_base_absolutes = np.asarray(inverse_base_absolutes, dtype=np.float64)[order]
    selection, pose_offset = pose_selection(bones)
    selection[:, 3:] = selection[:, 3 + order]
    selection = selection.reshape(THETA, -1)
    pose_offset = pose_offset.reshape(-1)
    mirror = np.array([-1.0, 1.0, 1.0]) if is_mirrored else np.ones(3)

    def skinning_transforms(pose):
        """(m, bones, 12): the top three rows of absolute_b @ inverse_base_absolute_b."""
        m = pose.shape[0]
        # Euler angles in x, z, y order: R = Rz(tz) Ry(ty) Rx(tx), written out
        tx = pose[:, 3:, 0]
        tz = pose[:, 3:, 1]
        ty = pose[:, 3:, 2]
        cx, sx = np.cos(tx), np.sin(tx)
        cy, sy = np.cos(ty), np.sin(ty)
        cz, sz = np.cos(tz), np.sin(tz)
        zero = tx * 0
        one = zero + 1
        rotation = nd.stack(
            cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx, zero,
            sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx, zero,
            -sy, cy * sx, cy * cx, zero,
            zero, zero, zero, one, axis=2)
        relatives = np.matmul(base_relatives, np.reshape(rotation, (m, bones, 4, 4)))
        # absolute_b = absolute_parent(b) @ relative_b, one depth level of bones at a time
        known = relatives[:, levels[0]]
        for level in range(1, len(levels)):
            deeper = np.matmul(known[:, level_parents[level]], relatives[:, levels[level]])
            known = nd.concat(known, deeper, dim=1)
        transforms = np.matmul(known, inverse_base_absolutes)[:, :, :3]
        return np.reshape(transforms, (m, bones, 12))

    def global_pose(pose):
        """The global rotation (angle-axis, identity below 1e-4) with its columns scaled,
        (m, 3, 3), and the global translation (m, 3)."""
        axis_angle = pose[:, 0]
        sqnorm = np.sum(axis_angle * axis_angle, axis=1)
        # the reference branches on the angle; both branches are computed and blended with
        # a 0/1 mask (``still`` also keeps the unused branch finite, and its gradient 0)
        still = np.sqrt(sqnorm) < 0.0001
        turning = 1 - still
        angle = np.sqrt(sqnorm + still)
        x = axis_angle[:, 0] / angle
        y = axis_angle[:, 1] / angle
        z = axis_angle[:, 2] / angle
        s = np.sin(angle)
        c = np.cos(angle)
        rotation = nd.stack(
            x * x + (1 - x * x) * c, x * y * (1 - c) - z * s, x * z * (1 - c) + y * s,
            x * y * (1 - c) + z * s, y * y + (1 - y * y) * c, y * z * (1 - c) - x * s,
            x * z * (1 - c) - y * s, z * y * (1 - c) + x * s, z * z + (1 - z * z) * c,
            axis=1)
        identity = np.reshape(np.eye(3), (1, 9))
        rotation = rotation * np.reshape(turning, (-1, 1)) + identity * np.reshape(still, (-1, 1))
        scaled = np.reshape(rotation, (-1, 3, 3)) * np.reshape(pose[:, 1], (-1, 1, 3))
        return scaled, pose[:, 2]

    def posed_vertex(transforms, rotation, translation, x, w):
        """Skinned, mirrored and globally posed positions (n, 3) of one vertex per point."""
        n = x.shape[0]
        if transforms.shape[0] == 1:     # one shared pose: all points in one product
            blended = np.matmul(w, transforms[0])                       # (n, 12)
        else:                            # a pose per point
            blended = np.reshape(np.matmul(np.reshape(w, (n, 1, bones)), transforms),
                                 (n, 12))
        skinned = np.sum(np.reshape(blended, (n, 3, 4)) * np.reshape(x, (n, 1, 4)), axis=2)
        skinned = skinned * mirror
        turned = np.matmul(rotation, np.reshape(skinned, (n, 3, 1)))
        return np.reshape(turned, (n, 3)) + translation

    def simple(theta, points, x, w):
        pose = np.reshape(np.matmul(theta, selection) + pose_offset, (-1, bones + 3, 3))
        transforms = skinning_transforms(pose)
        rotation, translation = global_pose(pose)
        return points - posed_vertex(transforms, rotation, translation, x, w)

    def complicated(theta, us, points, xa, wa, xb, wb, xc, wc):
        pose = np.reshape(np.matmul(theta, selection) + pose_offset, (-1, bones + 3, 3))
        transforms = skinning_transforms(pose)
        rotation, translation = global_pose(pose)
        posed_a = posed_vertex(transforms, rotation, translation, xa, wa)
        posed_b = posed_vertex(transforms, rotation, translation, xb, wb)
        posed_c = posed_vertex(transforms, rotation, translation, xc, wc)
        u0 = us[:, 0:1]
        u1 = us[:, 1:2]
        return points - (u0 * posed_a + u1 * posed_b + (1 - u0 - u1) * posed_c)

    def complicated_shifted(params, us, points, xa, wa, xb, wb, xc, wc):
        """``complicated`` with ``params = (du0, du1, theta)`` (1, 28) and every point's
        ``us`` moved by (du0, du1): d residual_i / d du is d residual_i / d us_i, since
        point i reads only its own us (the Jacobian's first two columns)."""
        return complicated(params[:, 2:], us + params[:, :2], points, xa, wa, xb, wb, xc, wc)

    return (pb.compile(simple), pb.compile(complicated), pb.compile(complicated_shifted),
            order)


class Problem:
    """One ``ht`` input as arrays: ``theta`` (26,), ``points`` (n, 3), ``us`` (n, 2) or
    None (simple), and per point its vertices' homogeneous base positions and weights
    (one vertex: simple; the triangle's three: complicated)."""

    def __init__(self, data, hands):
        model = data["data"]["model"]
        self.theta = np.asarray(data["theta"], dtype=np.float64)
        self.points = np.asarray(data["data"]["points"], dtype=np.float64)
        correspondences = np.asarray(data["data"]["correspondences"], dtype=np.int64)
        positions = np.asarray(model["base_positions"], dtype=np.float64)   # (vertices, 4)
        weights = np.asarray(model["weights"], dtype=np.float64)           # (vertices, bones)
        us = np.asarray(data["us"], dtype=np.float64)
        self.complicated = us.size > 0
        self.n = len(self.points)
        self.hand = hands(model)
        weights = weights[:, self.hand.order]           # the bones in the hand's order
        if self.complicated:
            self.us = us.reshape(-1, 2)
            corners = np.asarray(model["triangles"], dtype=np.int64)[correspondences].T
        else:
            self.us = None
            corners = correspondences[None]
        self.vertices = [(positions[v], weights[v]) for v in corners]

    def arguments(self, theta, start=0, stop=None):
        """The residual function's arguments for points start:stop."""
        part = slice(start, stop)
        vertex_data = [a[part] for pair in self.vertices for a in pair]
        if self.complicated:
            return (theta, self.us[part], self.points[part], *vertex_data)
        return (theta, self.points[part], *vertex_data)

    @property
    def residual_fn(self):
        return self.hand.complicated if self.complicated else self.hand.simple


def objective(problem):
    """The 3n residuals, point by point (x, y, z)."""
    err = problem.residual_fn(*problem.arguments(problem.theta.reshape(1, THETA)))
    return err.reshape(-1)


def jacobian(problem, chunk=CHUNK):
    """(3n, 26) or, complicated, (3n, 2 + 26): d residual / d (u of its point, theta), by
    forward mode: one batched tangent pass (``pb.jacfwd``, 26 or 28 directions) per chunk
    of points, the bone chain computed once per chunk."""
    if problem.complicated:
        fn = problem.hand.complicated_shifted
        params = np.concatenate((np.zeros(2), problem.theta)).reshape(1, -1)
    else:
        fn = problem.hand.simple
        params = problem.theta.reshape(1, THETA)
    columns = params.shape[1]
    jac = pb.jacfwd(fn, argnums=0)
    parts = [jac(*problem.arguments(params, start, min(start + chunk, problem.n)))
             for start in range(0, problem.n, chunk)]
    return np.concatenate(parts).reshape(3 * problem.n, columns)


class Models:
    """The compiled residual functions of each model seen (the eval sends one model)."""

    def __init__(self):
        self.cache = {}

    def __call__(self, model):
        key = (tuple(model["parents"]), str(model["base_relatives"]),
               str(model["inverse_base_absolutes"]), bool(model["is_mirrored"]))
        if key not in self.cache:
            self.cache[key] = Hand(model["parents"], model["base_relatives"],
                                        model["inverse_base_absolutes"], model["is_mirrored"])
        return self.cache[key]


class Ht:
    """The ``ht`` module: ``prepare`` converts the input, the functions return the eval's
    output format (3n residuals; 3n Jacobian rows) as arrays, listed by run.py after the
    timing."""

    def __init__(self):
        self.models = Models()
        self.functions = {"objective": self.objective, "jacobian": self.jacobian}

    def prepare(self, function, data):
        return (Problem(data, self.models),)

    def objective(self, problem):
        return objective(problem)   # (run.py converts after the timing)

    def jacobian(self, problem):
        return jacobian(problem)
