"""GradBench's objectives as ordinary Python over numpy arrays, for pullback to differentiate.

Each function follows the eval's specification (``evals/<name>/README.md`` and the C++
reference ``cpp/gradbench/evals/<name>.hpp`` of the GradBench repository); ``run.py``
differentiates them with ``pb.grad`` / ``pb.value_and_grad``.  Helper calls inside loops
are written out inline: a user-function call inside a ``for`` loop currently breaks
pullback's stack (see bench/README.md).
"""

from __future__ import annotations

import math

import numpy as np

import pullback as pb
from pullback import nd

# ----- hello, lse, llsq ----------------------------------------------------------------------


def square(x):
    return x * x


def lse(x):
    a = np.max(x)
    return a + np.log(np.sum(np.exp(x - a)))


def llsq(x, n):
    """sum_i (s_i - sum_j x_j t_i^j)^2 / 2, the polynomial by Horner's rule, as the C++
    reference evaluates it (``mul *= t``): no n x m matrix of powers, no ``pow``."""
    m = x.shape[0]
    t = np.linspace(-1.0, 1.0, n)       # -1 + 2 i / (n - 1): data only
    p = 0 * t
    for j in range(m - 1, -1, -1):
        p = p * t + x[j]
    r = np.sign(t) - p
    return np.sum(r * r) / 2


# ----- ode: RK4 of y_0' = x_0, y_i' = x_i y_{i-1}, from y = 0 to t = 2 ------------------------


def ode(x, s):
    # y_{i-1} as the vector shifted by one with a leading 1 (y_{-1} := 1): a concatenate,
    # whose gradient is a slice, where a gather by an index array y[previous] had a
    # scatter-add (np.add.at) per stage in the adjoint
    h = 2.0 / s
    y = 0 * x              # not np.zeros: y is differentiated, and np.zeros has no rule
    for _ in range(s):
        k1 = x * np.concatenate((np.ones(1), y[:-1]))
        y2 = y + h * k1 / 2
        k2 = x * np.concatenate((np.ones(1), y2[:-1]))
        y3 = y + h * k2 / 2
        k3 = x * np.concatenate((np.ones(1), y3[:-1]))
        y4 = y + h * k3
        k4 = x * np.concatenate((np.ones(1), y4[:-1]))
        y = y + h * (k1 + 2 * k2 + 2 * k3 + k4) / 6
    return y


def ode_last(x, s):
    return ode(x, s)[-1]


# ----- det: expansion by minors along the first row, one level of minors at a time ----------
#
# The same l! products as the recursive expansion (and as the C++ reference), but every
# minor of one size at once: level k holds the l!/(l-k)! minors left after k expansions,
# as one (count, size, size) array, each minor's own minors gathered by a table of the
# columns kept.  The determinants then go back up level by level.  Recursing in Python,
# one call per minor, cost ~15 us a call on the Python road (l = 7: 13,700 calls).


def det(A):
    ell = A.shape[0]
    minors = [np.reshape(A, (1, ell, ell))]
    for size in range(ell, 1, -1):
        keep = np.array([[c for c in range(size) if c != j] for j in range(size)])
        lower = minors[-1][:, 1:, :][:, :, keep]      # (count, size - 1, size, size - 1)
        minors.append(np.reshape(np.transpose(lower, (0, 2, 1, 3)), (-1, size - 1, size - 1)))
    dets = minors[-1][:, 0, 0]                         # the 1 x 1 minors
    for size in range(2, ell + 1):
        top = minors[ell - size][:, 0, :]              # first rows: (count, size)
        signs = np.where(np.arange(size) % 2 == 0, 1.0, -1.0)
        dets = np.sum(signs * top * np.reshape(dets, (-1, size)), axis=1)
    return dets[0]


# ----- gmm -----------------------------------------------------------------------------------


def log_gamma_distrib(a, p):
    return 0.25 * p * (p - 1) * math.log(math.pi) + sum(
        math.lgamma(a + 0.5 * (1 - j)) for j in range(1, p + 1))


def make_gmm(d, k, n, m, gamma):
    """The GMM log posterior for these sizes (the index tables are closure constants).

    Q_k = diag(exp(q_k)) + L_k with L_k's strictly lower part filled column by column
    from l_k; the objective is the eval's: log-likelihood + log Wishart prior.
    """
    pairs = [(i, j) for i in range(d) for j in range(i + 1, d)]   # l index -> (column, row)
    gather = np.zeros(d * d, dtype=np.int64)
    mask = np.zeros(d * d)
    for index, (col, row) in enumerate(pairs):
        gather[col * d + row] = index          # transposed: LT[col, row] = L[row, col]
        mask[col * d + row] = 1.0
    if not pairs:
        gather, mask = np.zeros(d * d, dtype=np.int64), np.zeros(d * d)
    wishart_n = d + m + 1
    constant = -n * d * 0.5 * math.log(2 * math.pi)
    wishart_c = wishart_n * d * (math.log(gamma) - 0.5 * math.log(2)) - \
        log_gamma_distrib(0.5 * wishart_n, d)

    def gmm_objective(alpha, mu, q, l, x):
        qdiag = np.exp(q)
        sum_qs = np.sum(q, axis=1)
        if d > 1:
            lt = np.reshape(l[:, gather] * mask, (k, d, d))
        else:
            lt = 0 * np.reshape(qdiag, (k, 1, 1))     # d == 1: no lower part
        # (k, 1, 1), not (k,): the native fuser puts this add in one kernel with qxc's
        # and then fails on shapes that do not broadcast (see bench/README.md)
        weights = np.reshape(alpha, (k, 1, 1)) + np.reshape(sum_qs, (k, 1, 1))
        xc = np.reshape(x, (1, n, d)) - np.reshape(mu, (k, 1, d))
        qxc = np.reshape(qdiag, (k, 1, d)) * xc + nd.batch_dot(xc, lt)
        main = np.reshape(weights, (k, 1)) - 0.5 * np.sum(qxc * qxc, axis=2)
        top = np.max(main, axis=0)
        slse = np.sum(top + np.log(np.sum(np.exp(main - top), axis=0)))
        a = np.max(alpha)
        lse_alpha = a + np.log(np.sum(np.exp(alpha - a)))
        frobenius = np.sum(qdiag * qdiag) + np.sum(l * l)
        prior = -(0.5 * gamma * gamma * frobenius - m * np.sum(sum_qs)) + k * wishart_c
        return constant + slse - n * lse_alpha + prior

    return gmm_objective


# ----- kmeans --------------------------------------------------------------------------------


def kmeans_cost(centroids, points):
    """sum_i min_j |C_j - P_i|^2, with |C - P|^2 expanded (n x k, not n x k x d)."""
    d2 = (np.sum(points * points, axis=1, keepdims=True)
          + np.sum(centroids * centroids, axis=1)
          - 2 * np.dot(points, centroids.T))
    return np.sum(np.min(d2, axis=1))


_kmeans_compiled = pb.compile(kmeans_cost)


def kmeans_direction(centroids, points):
    """J / diag(H): J and diag(H) from one Hessian-vector product with ones (exact, since
    H is diagonal), forward over reverse on the compiled code (``pb.hvp``)."""
    jacobian, hessian_diagonal = pb.hvp(_kmeans_compiled, (centroids, points),
                                        (np.ones_like(centroids), None))
    return jacobian / hessian_diagonal


# ----- lstm ----------------------------------------------------------------------------------


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstm_objective(main_params, extra_params, state, sequence):
    layers = main_params.shape[0] // 2
    b = sequence.shape[1]
    steps = sequence.shape[0]
    in_weight, out_weight, out_bias = extra_params[0], extra_params[1], extra_params[2]
    gates = []       # per layer: the weights and biases of its four gates (loop invariant)
    hidden = []
    cell = []
    for i in range(layers):
        w = main_params[2 * i]
        bias = main_params[2 * i + 1]
        gates.append((w[0:b], bias[0:b], w[b:2 * b], bias[b:2 * b],
                      w[2 * b:3 * b], bias[2 * b:3 * b], w[3 * b:4 * b], bias[3 * b:4 * b]))
        hidden.append(state[2 * i])
        cell.append(state[2 * i + 1])
    total = 0.0
    for t in range(steps - 1):
        out = sequence[t] * in_weight
        new_hidden = []
        new_cell = []
        for i in range(layers):
            wf, bf, wi, bi, wo, bo, wc, bc = gates[i]
            forget = 1 / (1 + np.exp(-(out * wf + bf)))
            ingate = 1 / (1 + np.exp(-(hidden[i] * wi + bi)))
            outgate = 1 / (1 + np.exp(-(out * wo + bo)))
            change = np.tanh(hidden[i] * wc + bc)
            c = cell[i] * forget + ingate * change
            h = outgate * np.tanh(c)
            new_cell.append(c)
            new_hidden.append(h)
            out = h
        hidden = new_hidden
        cell = new_cell
        ypred = out * out_weight + out_bias
        ynorm = ypred - np.log(np.sum(np.exp(ypred)) + 2)
        total = total + np.sum(sequence[t + 1] * ynorm)
    return -total / ((steps - 1) * b)


# ----- particle and saddle: nested AD through GradBench's gradient-descent solver ------------
#
# Both evals ask for four variants, rr, ff, fr and rf: the first letter names the mode of
# the outer derivative (the argmin's gradient), the second the mode of the inner one.  Each
# variant runs its modes with pullback's API, compiled, no tape:
#
# - the inner derivative is ``pb.grad`` (r) or ``pb.jacfwd`` (f) of the inner function,
#   called inside the outer function (``_particle_miss`` / ``_saddle_inner_max``);
# - the outer derivative is ``pb.grad`` (r) or ``pb.jvp`` (f: one run per input
#   direction) of that outer function.  pullback transforms the outer function, loop and
#   branches as written, and each nested derivative call by its own rule: under
#   ``pb.jvp``, ``pb.grad(g)``'s tangent is forward over reverse and ``pb.jacfwd(g)``'s
#   forward over forward; under ``pb.grad`` their VJP is one forward-over-reverse run of
#   ``g`` (the Hessian-vector product; pullback does not reverse-transform forward-mode
#   code itself).
#
# The solver is GradBench's (cpp/gradbench/gd.hpp).  The outer solver is
# ``multivariate_argmin`` on numpy; an inner solver that the outer derivative goes
# through is written out inside the outer function (compiled code calls the functions it
# names, not function-valued arguments).


def _value(v) -> float:
    return float(np.asarray(v).reshape(-1)[0])


def _magnitude(v) -> float:
    v = np.asarray(v)
    return math.sqrt(float(np.dot(v, v)))


def multivariate_argmin(f, gradient, x):
    """GradBench's gradient descent: the step doubles after 10 accepted steps in a row and
    halves on a rejected one; it stops when the gradient or the step is at most 1e-5."""
    fx = _value(f(x))
    gx = gradient(x)
    i = 0
    eta = 1e-5
    while True:
        if _magnitude(gx) <= 1e-5:
            return x
        if i == 10:
            eta *= 2
            i = 0
            continue
        x_prime = x - eta * gx
        if _magnitude(np.asarray(x) - np.asarray(x_prime)) <= 1e-5:
            return x
        fx_prime = _value(f(x_prime))
        if fx_prime < fx:
            x, fx = x_prime, fx_prime
            gx = gradient(x)
            i += 1
        else:
            eta /= 2
            i = 0


def multivariate_argmax(f, gradient, x):
    return multivariate_argmin(lambda v: -f(v), lambda v: -gradient(v), x)


def _forward_gradient(fn, x, *data):
    """d fn / dx at the numpy vector ``x`` by forward mode: one ``pb.jvp`` per basis
    direction (``data``: further arguments, without tangents)."""
    nones = (None,) * len(data)
    return np.array([pb.jvp(fn, (x, *data), (e, *nones))[1] for e in np.eye(x.size)])


def _outer_gradient(mode, fn):
    """The outer solver's gradient of ``fn`` (first argument): reverse or forward mode."""
    if mode == "r":
        return pb.grad(fn)
    return lambda x, *data: _forward_gradient(fn, x, *data)


# particle: two fixed unit charges at (10, 10 - w) and (10, 0), rows of CHARGES + w * MOVE.
PARTICLE_CHARGES = np.array([[10.0, 10.0], [10.0, 0.0]])
PARTICLE_MOVE = np.array([[0.0, -1.0], [0.0, 0.0]])


def particle_potential(x, charges):
    """p(x) = sum over the charges c of 1 / |x - c| (each |x - c| as the square root of
    a row sum, which takes the native road; ``np.linalg.norm(..., axis=1)`` does not yet)."""
    d = x - charges
    return np.sum(1 / np.sqrt(np.sum(d * d, axis=1)))


def _particle_miss(potential_gradient):
    """x_0(t_f)^2 of w (a vector of one): naive Euler (dt = 0.1) of the particle under the
    force -grad p, its gradient by ``potential_gradient``, until the step that would
    cross the x axis, then linear interpolation to the crossing."""
    def miss(w):
        charges = PARTICLE_CHARGES + w * PARTICLE_MOVE
        x = np.array([0.0, 8.0])
        xdot = np.array([0.75, 0.0])
        dt = 0.1
        while True:
            force_gradient = potential_gradient(x, charges)
            x_new = x + dt * xdot
            if x_new[1] > 0:
                # xdot + dt * (-grad p), with one op less: the same floating-point value
                x, xdot = x_new, xdot - dt * force_gradient
            else:
                break
        dt_f = -x[1] / xdot[1]
        x_tf = x + dt_f * xdot
        return x_tf[0] * x_tf[0]

    return miss


#: the inner derivative, grad p, by mode: reverse (pb.grad) or forward (pb.jacfwd)
INNER = {"r": lambda f, argnums=0: pb.grad(f, argnums),
         "f": lambda f, argnums=0: pb.jacfwd(f, argnums)}
PARTICLE_MISS = {mode: _particle_miss(make(particle_potential))
                 for mode, make in INNER.items()}


def particle(variant, w0):
    """argmin over w of x_0(t_f)^2 from w0: GradBench's particle; ``variant``: the outer
    and the inner mode (``"fr"``: the argmin's gradient by ``pb.jvp``, the force by
    ``pb.grad``)."""
    miss = PARTICLE_MISS[variant[1]]
    w = multivariate_argmin(miss, _outer_gradient(variant[0], miss), np.array([float(w0)]))
    return float(w[0])


def saddle_cost(p1, p2):
    """f(p1, p2) = (p1_0^2 + p1_1^2) - (p2_0^2 + p2_1^2)."""
    return np.sum(p1 * p1) - np.sum(p2 * p2)


def _saddle_inner_max(p2_gradient):
    """max over p2 of f(p1, p2) by GradBench's gradient ascent from ``start``, the ascent
    direction by ``p2_gradient`` (``multivariate_argmax`` written out, so that the outer
    derivative follows it)."""
    def inner_max(p1, start):
        x = start
        fx = -saddle_cost(p1, x)
        gx = -p2_gradient(p1, x)
        i = 0
        eta = 1e-5
        while True:
            if math.sqrt(np.dot(gx, gx)) <= 1e-5:
                break
            if i == 10:
                eta = eta * 2
                i = 0
                continue
            x_prime = x - eta * gx
            step = x - x_prime
            if math.sqrt(np.dot(step, step)) <= 1e-5:
                break
            fx_prime = -saddle_cost(p1, x_prime)
            if fx_prime < fx:
                x = x_prime
                fx = fx_prime
                gx = -p2_gradient(p1, x)
                i = i + 1
            else:
                eta = eta / 2
                i = 0
        return saddle_cost(p1, x)

    return inner_max


SADDLE_INNER_MAX = {mode: _saddle_inner_max(make(saddle_cost, 1))
                    for mode, make in INNER.items()}
SADDLE_P2_GRADIENT = {mode: make(saddle_cost, 1) for mode, make in INNER.items()}


def saddle(variant, start):
    """GradBench's saddle: r1 = argmin over p1 of max over p2 of f(p1, p2) (the argmin's
    gradient in the outer mode, the inner argmax's in the inner mode), then r2 = argmax
    over p2 of f(r1, p2), its gradient in the outer mode; every solve from ``start``;
    returns r1 + r2."""
    s = np.array(start, dtype=np.float64)
    inner_max = SADDLE_INNER_MAX[variant[1]]
    gradient = _outer_gradient(variant[0], inner_max)
    r1 = multivariate_argmin(lambda p1: inner_max(p1, s), lambda p1: gradient(p1, s), s)
    p2_gradient = SADDLE_P2_GRADIENT[variant[0]]
    r2 = multivariate_argmax(lambda v: saddle_cost(r1, v), lambda v: p2_gradient(r1, v), s)
    return [float(v) for v in r1] + [float(v) for v in r2]
