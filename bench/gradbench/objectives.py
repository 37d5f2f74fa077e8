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

from pullback import autograd as ag
from pullback import nd

# ----- hello, lse, llsq ----------------------------------------------------------------------


def square(x):
    return x * x


def lse(x):
    a = np.max(x)
    return a + np.log(np.sum(np.exp(x - a)))


def llsq(x, n):
    m = x.shape[0]
    i = np.arange(n, dtype=np.float64)
    t = -1 + i * 2 / (n - 1)
    s = np.sign(t)
    powers = t.reshape(n, 1) ** np.arange(m, dtype=np.float64)   # t_i ** j, data only
    r = s - np.dot(powers, x)
    return np.sum(r * r) / 2


# ----- ode: RK4 of y_0' = x_0, y_i' = x_i y_{i-1}, from y = 0 to t = 2 ------------------------


def ode(x, s):
    h = 2.0 / s
    n = x.shape[0]
    previous = np.maximum(np.arange(n) - 1, 0)     # y_{i-1}, with y_{-1} := 1 below
    inner = np.minimum(np.arange(n), 1).astype(np.float64)
    outer = 1 - inner
    y = 0 * x              # not np.zeros: y is differentiated, and np.zeros has no rule
    for _ in range(s):
        k1 = x * (y[previous] * inner + outer)
        y2 = y + h * k1 / 2
        k2 = x * (y2[previous] * inner + outer)
        y3 = y + h * k2 / 2
        k3 = x * (y3[previous] * inner + outer)
        y4 = y + h * k3
        k4 = x * (y4[previous] * inner + outer)
        y = y + h * (k1 + 2 * k2 + 2 * k3 + k4) / 6
    return y


def ode_last(x, s):
    # a length-1 slice, not [-1]: a float head gradient reaching getitem's rule crashes
    return ode(x, s)[-1:]


# ----- det: expansion by minors along the first row, recursively ------------------------------


def det(A):
    if A.shape[0] == 1:
        return A[0, 0]
    return expand(A, 0)


def expand(A, j):
    """Sum over the columns j, j+1, ... of the first row of +-A[0, j] * det(minor)."""
    n = A.shape[0]
    if j == n:
        return 0.0
    keep = []
    for c in range(n):
        if c != j:
            keep.append(c)
    minor = A[1:][:, keep]
    term = A[0, j] * det(minor)
    if j % 2 == 1:
        term = -term
    return term + expand(A, j + 1)


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
    d2 = (nd.sum(points * points, axis=1, keepdims=True)
          + nd.sum(centroids * centroids, axis=1)
          - 2 * nd.dot(points, centroids.T))
    return nd.sum(nd.min(d2, axis=1))


def kmeans_hessian_diagonal(centroids, points):
    """diag(H) as a Hessian-vector product with ones: exact, since H is diagonal.

    Reverse over reverse on pullback's tape (``create_graph=True``).
    """
    c = nd.array(centroids)
    p = nd.array(points)
    c.attach_grad()
    with ag.record():
        cost = kmeans_cost(c, p)
        (g,) = ag.grad([cost], [c], create_graph=True)
        hv = nd.sum(g)
    hv.backward()
    return c.grad.asnumpy()


# ----- lstm ----------------------------------------------------------------------------------


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstm_objective(main_params, extra_params, state, sequence):
    layers = main_params.shape[0] // 2
    b = sequence.shape[1]
    steps = sequence.shape[0]
    hidden = []
    cell = []
    for i in range(layers):
        hidden.append(state[2 * i])
        cell.append(state[2 * i + 1])
    total = 0.0
    for t in range(steps - 1):
        out = sequence[t] * extra_params[0]
        new_hidden = []
        new_cell = []
        for i in range(layers):
            w = main_params[2 * i]
            bias = main_params[2 * i + 1]
            forget = 1 / (1 + np.exp(-(out * w[0:b] + bias[0:b])))
            ingate = 1 / (1 + np.exp(-(hidden[i] * w[b:2 * b] + bias[b:2 * b])))
            outgate = 1 / (1 + np.exp(-(out * w[2 * b:3 * b] + bias[2 * b:3 * b])))
            change = np.tanh(hidden[i] * w[3 * b:4 * b] + bias[3 * b:4 * b])
            c = cell[i] * forget + ingate * change
            h = outgate * np.tanh(c)
            new_cell.append(c)
            new_hidden.append(h)
            out = h
        hidden = new_hidden
        cell = new_cell
        ypred = out * extra_params[1] + extra_params[2]
        ynorm = ypred - np.log(np.sum(np.exp(ypred)) + 2)
        total = total + np.sum(sequence[t + 1] * ynorm)
    return -total / ((steps - 1) * b)


# ----- particle and saddle: nested reverse over reverse on pullback's tape -------------------
#
# The solver is GradBench's (cpp/gradbench/gd.hpp).  It works on NDArrays; its control
# decisions read plain floats.  ``grad_r(f, x, nested)`` is reverse mode on the tape: a
# plain gradient, or (nested) one recorded with create_graph=True so that an enclosing
# record() can differentiate through it.


def grad_r(f, x, nested):
    if nested:
        return ag.grad([f(x)], [x], create_graph=True)[0]
    leaf = x.detach()
    leaf.attach_grad()
    with ag.record():
        y = f(leaf)
    y.backward()
    return leaf.grad


def _norm(v):
    return math.sqrt(float(nd.sum(v * v).asscalar()))


def multivariate_argmin(f, gradient, x):
    fx = f(x)
    gx = gradient(x)
    i = 0
    eta = 1e-5
    while True:
        if _norm(gx) <= 1e-5:
            return x
        if i == 10:
            eta *= 2
            i = 0
            continue
        x_prime = x - eta * gx
        if _norm(x - x_prime) <= 1e-5:
            return x
        fx_prime = f(x_prime)
        if fx_prime.asscalar() < fx.asscalar():
            x, fx = x_prime, fx_prime
            gx = gradient(x)
            i += 1
        else:
            eta /= 2
            i = 0


def multivariate_argmax(f, gradient, x):
    return multivariate_argmin(lambda v: -f(v), lambda v: -gradient(v), x)


def particle_potential(p, w):
    """1/|p - (10, 10 - w)| + 1/|p - (10, 0)|."""
    c1 = nd.concat(nd.full((1,), 10.0, dtype="float64"), 10.0 - w, dim=0)
    c2 = nd.array(np.array([10.0, 0.0]))
    return 1 / nd.sqrt(nd.sum((p - c1) ** 2)) + 1 / nd.sqrt(nd.sum((p - c2) ** 2))


def particle_euler(w, nested):
    """x_0(t_f)^2 for control w (shape (1,)); the force is reverse-mode AD of the potential."""
    x = nd.array(np.array([0.0, 8.0]))
    x.attach_grad()
    xdot = nd.array(np.array([0.75, 0.0]))
    dt = 0.1
    while True:
        xddot = -grad_r(lambda p: particle_potential(p, w), x, nested)
        x_new = x + dt * xdot
        if x_new[1].asscalar() > 0:
            x, xdot = x_new, xdot + dt * xddot
        else:
            break
    dt_f = -x[1] / xdot[1]
    x_tf = x + dt_f * xdot
    return x_tf[0:1] * x_tf[0:1]


def particle_rr(w0):
    """argmin_w of particle_euler by gradient descent, every derivative reverse mode."""
    def objective(w):
        return particle_euler(w, nested=False)

    def gradient(w):
        leaf = w.detach()
        leaf.attach_grad()
        with ag.record():
            y = particle_euler(leaf, nested=True)
        y.backward()
        return leaf.grad

    w = multivariate_argmin(objective, gradient, nd.array(np.array([w0])))
    return float(w.asscalar())


def saddle_cost(p1, p2):
    return nd.sum(p1 * p1) - nd.sum(p2 * p2)


def saddle_rr(start):
    """min over p1 of max over p2 of saddle_cost, both argmin/argmax reverse mode.

    The outer gradient differentiates through the inner solver's iterations.
    """
    s = nd.array(np.array(start))

    def inner_max(p1, nested):
        f = lambda p2: saddle_cost(p1, p2)
        p2 = multivariate_argmax(f, lambda v: grad_r(f, _tracked(v), nested), s)
        return f(p2)

    def outer_gradient(p1):
        leaf = p1.detach()
        leaf.attach_grad()
        with ag.record():
            y = inner_max(leaf, nested=True)
        y.backward()
        return leaf.grad

    with ag.pause():
        r1 = multivariate_argmin(lambda p1: inner_max(p1, nested=False), outer_gradient, s)
    f2 = lambda p2: saddle_cost(r1, p2)
    r2 = multivariate_argmax(f2, lambda v: grad_r(f2, v, nested=False), s)
    return [float(v) for v in r1.asnumpy()] + [float(v) for v in r2.asnumpy()]


def _tracked(v):
    """v itself if it has history on the tape, else a leaf that can be differentiated."""
    from pullback.runtime import tape

    if tape.is_tracked(v):
        return v
    leaf = v.copy()
    leaf.attach_grad()
    return leaf
