"""Logistic regression by gradient descent over a Dask array, with pullback.dask.

    python examples/dask_logistic.py                     # a LocalCluster: 2 workers, 1 GiB each
    python examples/dask_logistic.py --rows 20000000     # more data than one worker may hold
    python examples/dask_logistic.py --scheduler tcp://host:8786   # a real cluster

The data is generated on the workers chunk by chunk (never on the client); each step is one
pullback.dask.value_and_grad: every chunk's value and gradient on the worker that holds it,
summed in a tree.  The workers import this file by path to find ``loss`` (on a real cluster
it must be at the same path there, or in a module they can import).
"""

import argparse
import time

import numpy as np


def loss(params, batch):
    """Mean logistic loss of one chunk: log(1 + exp(-y (X w + b)))."""
    w, b = params
    X, y = batch
    z = np.dot(X, w) + b
    return np.mean(np.log1p(np.exp(-y * z)))


def make_data(rows, features, chunk, seed=0):
    """Features X ~ N(0, 1) and labels y = sign(X w_true + noise), as lazy Dask arrays."""
    import dask.array as da
    state = da.random.RandomState(seed)
    X = state.normal(size=(rows, features), chunks=(chunk, features))
    w_true = np.linspace(-1.0, 1.0, features)
    y = da.sign(X @ w_true + 0.5 * state.normal(size=rows, chunks=chunk))
    return X, y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--scheduler", help="address of a running Dask scheduler")
    parser.add_argument("--memory-limit", default="1GiB", help="per worker of the LocalCluster")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    import pullback.dask as pbd

    if args.scheduler:
        cluster, client = None, Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               memory_limit=args.memory_limit, dashboard_address=None)
        client = Client(cluster)
    try:
        X, y = make_data(args.rows, args.features, args.chunk)
        params = (np.zeros(args.features), 0.0)
        print(f"{args.rows} rows x {args.features} features in {X.numblocks[0]} chunks on "
              f"{len(client.scheduler_info()['workers'])} workers", flush=True)
        for step in range(args.steps):
            start = time.perf_counter()
            value, (gw, gb) = pbd.value_and_grad(loss, params, (X, y), client=client,
                                                 reduce="mean")
            params = (params[0] - args.lr * gw, params[1] - args.lr * gb)
            print(f"step {step:3d}  loss {value:.6f}  |grad| {np.linalg.norm(gw):.3e}  "
                  f"{time.perf_counter() - start:.3f} s", flush=True)
        print("w =", np.round(params[0], 3), " b =", round(params[1], 3))
        return value
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    main()
