"""Time per data-parallel gradient step (pullback.dask) vs single-process pb.value_and_grad.

    PYTHONPATH=. python bench/dask_step.py --rows 1000000 --features 10 --chunk 125000

For 1 and 2 worker processes (LocalCluster, one thread each; data generated and persisted
on the workers), the median time of a logistic-loss step over all rows, the same step of
an almost empty loss (the scheduler's overhead per step for that many partitions), and
pb.value_and_grad over the same rows as one numpy array in this process.
"""

import argparse
import statistics
import time

import numpy as np


def logistic(params, batch):
    w, b = params
    X, y = batch
    z = np.dot(X, w) + b
    return np.sum(np.log1p(np.exp(-y * z)))


def almost_empty(params, batch):
    w, b = params
    return np.sum(w * w) + b


def flat_logistic(w, b, X, y):
    return logistic((w, b), (X, y))


def median_time(step, repeat):
    step()   # compile and warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=125_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import dask.array as da
    from distributed import Client, LocalCluster

    import pullback as pb
    import pullback.dask as pbd

    params = (np.full(args.features, 0.1), 0.2)
    state = da.random.RandomState(0)
    X = state.normal(size=(args.rows, args.features), chunks=(args.chunk, args.features))
    y = da.sign(state.normal(size=args.rows, chunks=args.chunk))
    print(f"{args.rows} rows x {args.features} features, {X.numblocks[0]} partitions of "
          f"{args.chunk} rows; median of {args.repeat} steps")

    Xn, yn = X.compute(), y.compute()
    local = pb.value_and_grad(flat_logistic, argnums=(0, 1))
    t = median_time(lambda: local(*params, Xn, yn), args.repeat)
    print(f"single process pb.value_and_grad      {t * 1e3:9.1f} ms / step")
    del Xn, yn

    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            Xp, yp = client.persist([X, y])
            data = (Xp, yp)
            t = median_time(lambda: pbd.value_and_grad(logistic, params, data, client=client),
                            args.repeat)
            e = median_time(lambda: pbd.value_and_grad(almost_empty, params, data,
                                                       client=client), args.repeat)
            print(f"{workers} worker process{'es' if workers > 1 else '  '}, logistic step  "
                  f"{t * 1e3:9.1f} ms / step   almost-empty loss {e * 1e3:7.1f} ms / step")


if __name__ == "__main__":
    main()
