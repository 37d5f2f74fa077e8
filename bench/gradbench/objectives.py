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
from pullback import autograd as ag
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
    # a length-1 slice, not [-1]: a float head gradient reaching getitem's rule crashes
    return ode(x, s)[-1:]


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
# the outer derivative (the argmin's gradient), the second the mode of the inner one.
# pullback has no forward mode.  Every derivative here is of a scalar function, and the
# forward-mode gradient of a scalar function -- its n directional derivatives J e_i -- is
# the same vector as the reverse-mode gradient, so all four variants run the same code,
# reverse mode at both levels:
#
# - an inner gradient that nothing differentiates again (the objective seen by the outer
#   solver, and saddle's final argmax) is ``pb.grad``: pullback's source transformation,
#   on numpy arrays;
# - the outer gradient is reverse over reverse on the tape: the outer function is
#   recorded with every inner gradient taken by ``ag.grad(..., create_graph=True)``, so
#   that the inner backward passes are recorded too, then one ``backward()`` runs.
#
# The solver is GradBench's (cpp/gradbench/gd.hpp).  It works on numpy arrays or on
# NDArrays; its decisions read plain floats (``np.asarray`` of an NDArray is its buffer,
# read without a tape node).


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


def _nested_gradient(f, x):
    """The gradient of scalar ``f`` at ``x``, recorded (``create_graph=True``) so that an
    enclosing ``record()`` differentiates through it.  ``x`` must be on the tape."""
    return ag.grad([f(x)], [x], create_graph=True)[0]


def _outer_gradient(fn, x):
    """d fn / dx at numpy ``x`` by reverse mode on the tape (fn may nest gradients)."""
    leaf = nd.array(x)
    leaf.attach_grad()
    with ag.record():
        y = fn(leaf)
    y.backward()
    return leaf.grad.asnumpy()


def _variable(values):
    """A fresh array with a gradient buffer, so that gradients can be taken at it."""
    v = nd.array(np.array(values, dtype=np.float64))
    v.attach_grad()
    return v


# particle: two fixed unit charges at (10, 10 - w) and (10, 0), rows of CHARGES + w * MOVE.
PARTICLE_CHARGES = np.array([[10.0, 10.0], [10.0, 0.0]])
PARTICLE_MOVE = np.array([[0.0, -1.0], [0.0, 0.0]])


def particle_potential(x, charges):
    """p(x) = sum over the charges c of 1 / |x - c|."""
    return nd.sum(1 / nd.norm(x - charges, axis=1))


_particle_force_gradient = pb.grad(particle_potential)   # d p / d x, numpy in and out


def particle_miss(x, xdot, charges, potential_gradient):
    """x_0(t_f)^2: naive Euler (dt = 0.1) of the particle under the force -grad p until
    the step that would cross the x axis, then linear interpolation to the crossing.
    Written once for numpy arrays and NDArrays (the result has shape (1,))."""
    dt = 0.1
    while True:
        force_gradient = potential_gradient(x, charges)
        x_new = x + dt * xdot
        if np.asarray(x_new)[1] > 0:
            # xdot + dt * (-grad p), with one op less: the same floating-point value
            x, xdot = x_new, xdot - dt * force_gradient
        else:
            break
    dt_f = -x[1:2] / xdot[1:2]
    x_tf = x + dt_f * xdot
    return x_tf[0:1] * x_tf[0:1]


def _particle_miss_numpy(w):
    charges = PARTICLE_CHARGES + w * PARTICLE_MOVE
    return particle_miss(np.array([0.0, 8.0]), np.array([0.75, 0.0]), charges,
                         _particle_force_gradient)


def _particle_miss_recorded(w):
    charges = nd.array(PARTICLE_CHARGES) + w * nd.array(PARTICLE_MOVE)
    return particle_miss(_variable([0.0, 8.0]), nd.array(np.array([0.75, 0.0])), charges,
                         lambda x, c: _nested_gradient(lambda p: particle_potential(p, c), x))


def particle(w0):
    """argmin over w of x_0(t_f)^2 from w0: GradBench's particle, every variant.

    The solver's objective runs the Euler loop on numpy with the force from ``pb.grad``;
    its gradient records the Euler loop on the tape with each force from ``ag.grad(...,
    create_graph=True)`` and runs ``backward()``: reverse over reverse.
    """
    w = multivariate_argmin(_particle_miss_numpy,
                            lambda w: _outer_gradient(_particle_miss_recorded, w),
                            np.array([float(w0)]))
    return float(w[0])


def saddle_cost(p1, p2):
    """f(p1, p2) = (p1_0^2 + p1_1^2) - (p2_0^2 + p2_1^2)."""
    return nd.sum(nd.square(p1)) - nd.sum(nd.square(p2))


_saddle_p2_gradient = pb.grad(saddle_cost, argnums=1)    # d f / d p2, numpy in and out


def saddle(start):
    """GradBench's saddle, every variant: r1 = argmin over p1 of max over p2 of f(p1, p2),
    then r2 = argmax over p2 of f(r1, p2), every solve from ``start``; returns r1 + r2.

    The outer solver's objective runs the inner argmax on numpy with ``pb.grad``; its
    gradient records the inner argmax on the tape, each inner gradient by ``ag.grad(...,
    create_graph=True)`` (the inner solver's objective values are read unrecorded), and
    differentiates f(p1, argmax) through the whole solve with ``backward()``.  The final
    argmax uses ``pb.grad``.
    """
    s = np.array(start, dtype=np.float64)

    def inner_max(p1):
        p2 = multivariate_argmax(lambda v: saddle_cost(p1, v),
                                 lambda v: _saddle_p2_gradient(p1, v), s)
        return saddle_cost(p1, p2)

    def inner_max_recorded(p1):
        def value(v):
            with ag.pause():
                return saddle_cost(p1, v)

        p2 = multivariate_argmax(
            value, lambda v: _nested_gradient(lambda q: saddle_cost(p1, q), v), _variable(s))
        return saddle_cost(p1, p2)

    r1 = multivariate_argmin(inner_max, lambda p1: _outer_gradient(inner_max_recorded, p1), s)
    r2 = multivariate_argmax(lambda v: saddle_cost(r1, v),
                             lambda v: _saddle_p2_gradient(r1, v), s)
    return [float(v) for v in r1] + [float(v) for v in r2]
