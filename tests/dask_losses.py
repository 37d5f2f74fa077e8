"""Losses the Dask tests ship to workers by reference (workers import this module)."""

import numpy as np

import pullback as pb


def logistic_sum(params, batch):
    w, b = params
    X, y = batch
    z = np.dot(X, w) + b
    return np.sum(np.log1p(np.exp(-y * z)))


def logistic_mean(params, batch):
    w, b = params
    X, y = batch
    z = np.dot(X, w) + b
    return np.mean(np.log1p(np.exp(-y * z)))


def squares(w, X):
    return np.sum(np.dot(X, w) ** 2)


def log_loss(params, batch):
    """nan where a row of X is negative (log of a negative number)."""
    (w,) = params
    return np.sum(np.log(np.dot(batch, w)))


def refused(w, X):
    try:   # pullback refuses try: a compile error on the workers
        out = np.sum(X * w)
    except ValueError:
        out = np.sum(X)
    return out


def slow_squares(w, X):
    """Many passes over the partition: a step long enough to kill a worker during it."""
    total = np.sum(X * w)
    for _ in range(60):
        total = total + np.sum(np.tanh(np.dot(X, w)) ** 2)
    return total


def exit_soon(delay=0.2):
    """Kill this worker process (no cleanup) ``delay`` seconds from now, mid-task."""
    import os
    import threading
    threading.Timer(delay, os._exit, args=(1,)).start()


@pb.compile
def compiled_squares(w, X):
    return np.sum(np.dot(X, w) ** 2)


def logistic_dict(params, batch):
    X, y = batch
    z = np.dot(X, params["w"]) + params["b"]
    return np.sum(np.log1p(np.exp(-y * z)))


@pb.compile(signatures=[(("float64", "float64"), None)])
def logistic_ahead_of_time(params, batch):
    """Built ahead of time by ``pullback compile`` for params (w, b) and a batch."""
    w, b = params
    X, y = batch
    z = np.dot(X, w) + b
    return np.sum(np.log1p(np.exp(-y * z)))
