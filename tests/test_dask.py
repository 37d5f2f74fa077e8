"""pullback.dask on a LocalCluster of 2 worker processes (started here): gradients equal
pb.value_and_grad over the concatenated data (itself checked against central differences),
and each fault gets its own clear error."""

import os
import sys
import threading
import time

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster

import dask_losses
import pullback as pb
import pullback.dask as pbd

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def client():
    # spawned worker processes import pullback (the checkout) and dask_losses (this folder)
    paths = [TESTS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit="1GiB") as cluster, \
            Client(cluster) as c:
        yield c


def logistic_data(n, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.sign(rng.normal(size=n))
    return X, y, (rng.normal(size=d), 0.3)


def flat_sum(w, b, X, y):
    return dask_losses.logistic_sum((w, b), (X, y))


def flat_mean(w, b, X, y):
    return dask_losses.logistic_mean((w, b), (X, y))


def whole(flat, params, X, y):
    return pb.value_and_grad(flat, argnums=(0, 1))(*params, X, y)


def assert_close(got, want):
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    for g, h in zip(got[1], want[1], strict=True):
        np.testing.assert_allclose(g, h, rtol=1e-11, atol=1e-13)


def test_whole_data_reference_matches_central_differences():
    X, y, (w, b) = logistic_data(50)
    for flat in (flat_sum, flat_mean):
        _, (gw, gb) = whole(flat, (w, b), X, y)
        eps = 1e-6
        for i in range(3):
            e = np.zeros(3)
            e[i] = eps
            numeric = (flat(w + e, b, X, y) - flat(w - e, b, X, y)) / (2 * eps)
            np.testing.assert_allclose(gw[i], numeric, rtol=1e-6)
        numeric = (flat(w, b + eps, X, y) - flat(w, b - eps, X, y)) / (2 * eps)
        np.testing.assert_allclose(gb, numeric, rtol=1e-6)


@pytest.mark.parametrize("chunks", [200, 64, (10, 150, 40), 7])
def test_sum_equals_whole_data(client, chunks):
    X, y, params = logistic_data(200)
    dX, dy = da.from_array(X, chunks=(chunks, 3)), da.from_array(y, chunks=(chunks,))
    got = pbd.value_and_grad(dask_losses.logistic_sum, params, (dX, dy), client=client)
    assert isinstance(got[1], tuple) and got[1][0].shape == (3,) and isinstance(got[1][1], float)
    assert_close(got, whole(flat_sum, params, X, y))


@pytest.mark.parametrize("chunks", [64, (10, 150, 40)])
def test_mean_equals_whole_data(client, chunks):
    X, y, params = logistic_data(200)
    dX, dy = da.from_array(X, chunks=(chunks, 3)), da.from_array(y, chunks=(chunks,))
    got = pbd.value_and_grad(dask_losses.logistic_mean, list(params), (dX, dy), client=client,
                             reduce="mean")
    assert isinstance(got[1], list)
    assert_close(got, whole(flat_mean, params, X, y))


def test_weights_and_delayed_batches(client):
    X, y, params = logistic_data(90)
    pieces = [(X[:30], y[:30]), (X[30:], y[30:])]
    batches = [dask.delayed(p, traverse=False) for p in pieces]
    got = pbd.value_and_grad(dask_losses.logistic_sum, params, batches, client=client,
                             weights=[2.0, 0.5])
    a, b = (whole(flat_sum, params, *p) for p in pieces)
    want = (2 * a[0] + 0.5 * b[0], [2 * ga + 0.5 * gb for ga, gb in zip(a[1], b[1])])
    assert_close(got, want)


def test_single_array_params_and_default_scheduler():
    X = np.random.default_rng(1).normal(size=(40, 4))
    w = np.linspace(-1, 1, 4)
    got = pbd.value_and_grad(dask_losses.squares, w, da.from_array(X, chunks=(15, 4)))
    want = pb.value_and_grad(dask_losses.squares)(w, X)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)


def test_compiled_once_per_worker(client):
    X, y, params = logistic_data(120, seed=3)
    data = (da.from_array(X, chunks=(20, 3)), da.from_array(y, chunks=(20,)))
    before = client.run(pbd.cache_stats)
    for _ in range(3):
        pbd.value_and_grad(dask_losses.logistic_sum, params, data, client=client)
    after = client.run(pbd.cache_stats)
    calls = sum(after[w]["calls"] - before[w]["calls"] for w in after)
    assert calls == 3 * 6
    for w in after:   # a worker compiles a (function, structure) once, whatever it ran before
        assert after[w]["compiled"] - before[w]["compiled"] <= 1


def test_nan_partition_is_named(client):
    X = np.abs(np.random.default_rng(2).normal(size=(60, 2))) + 0.1
    X[47, 0] = -5.0   # row 47: partition 3 of chunks of 15
    with pytest.raises(pbd.NonFiniteError, match="partition") as info:
        pbd.value_and_grad(dask_losses.log_loss, (np.ones(2),),
                           da.from_array(X, chunks=(15, 2)), client=client)
    assert info.value.partitions == [3]
    assert isinstance(info.value, FloatingPointError)


def test_wrong_shape_params_fail_before_work_is_sent(client):
    X, y, (w, b) = logistic_data(100)
    data = (da.from_array(X, chunks=(25, 3)), da.from_array(y, chunks=(25,)))
    before = client.run(pbd.cache_stats)
    with pytest.raises(pbd.ParamsError, match=r"shapes \(4,\)"):
        pbd.value_and_grad(dask_losses.logistic_sum, (np.ones(4), b), data, client=client)
    assert client.run(pbd.cache_stats) == before


def test_worker_that_cannot_import_names_function_and_worker(client, tmp_path, monkeypatch):
    (tmp_path / "only_on_client.py").write_text(
        "import numpy as np\n\ndef loss(w, X):\n    return np.sum(X * w)\n")
    monkeypatch.syspath_prepend(str(tmp_path))   # after the workers started: not theirs
    import only_on_client
    X = np.ones((20, 2))
    with pytest.raises(pbd.WorkerFunctionError) as info:
        pbd.value_and_grad(only_on_client.loss, np.ones(2), da.from_array(X, chunks=(10, 2)),
                           client=client)
    message = str(info.value)
    assert "only_on_client.loss" in message and "ModuleNotFoundError" in message
    assert any(address in message for address in client.scheduler_info()["workers"])
    sys.modules.pop("only_on_client")


def test_worker_that_cannot_compile_names_function(client):
    X = np.ones((20, 2))
    with pytest.raises(pbd.WorkerFunctionError, match=r"dask_losses.refused.*CompileError"):
        pbd.value_and_grad(dask_losses.refused, np.ones(2), da.from_array(X, chunks=(10, 2)),
                           client=client, check=False)
    with pytest.raises(pb.CompileError):   # checked locally first, by default
        pbd.value_and_grad(dask_losses.refused, np.ones(2), da.from_array(X, chunks=(10, 2)),
                           client=client)


def test_local_functions_are_refused():
    def loss(w, X):
        return np.sum(X * w)
    with pytest.raises(TypeError, match="top level"):
        pbd.value_and_grad(loss, np.ones(2), da.ones((4, 2), chunks=(2, 2)))


def test_killed_worker_mid_step_still_gives_the_exact_gradient(client):
    rows, chunk = 16 * 20000, 20000
    X = da.random.RandomState(5).normal(size=(rows, 10), chunks=(chunk, 10))
    w = np.linspace(-0.5, 0.5, 10)
    calm = pbd.value_and_grad(dask_losses.slow_squares, w, X, client=client)
    pids = set(client.run(os.getpid).values())
    outcome = {}

    def step():
        outcome["result"] = pbd.value_and_grad(dask_losses.slow_squares, w, X, client=client)

    thread = threading.Thread(target=step)
    thread.start()
    deadline = time.monotonic() + 30
    while not any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    victim = sorted(client.scheduler_info()["workers"])[0]
    client.run(dask_losses.exit_soon, 0.1, workers=[victim])
    time.sleep(0.3)
    killed_mid_step = thread.is_alive()
    thread.join(120)
    assert not thread.is_alive()
    value, grad = outcome["result"]
    assert value == calm[0] and np.array_equal(grad, calm[1])   # the same sums, bit for bit
    want = pb.value_and_grad(dask_losses.slow_squares)(w, X.compute())
    np.testing.assert_allclose(value, want[0], rtol=1e-10)
    np.testing.assert_allclose(grad, want[1], rtol=1e-10)
    client.wait_for_workers(2, timeout=60)
    assert killed_mid_step and set(client.run(os.getpid).values()) != pids


def test_training_example_on_the_cluster(client):
    """examples/dask_logistic.py pointed at this cluster with --scheduler: its loss starts at
    log 2 (zero parameters) and falls at every step."""
    import subprocess
    script = os.path.join(os.path.dirname(TESTS), "examples", "dask_logistic.py")
    out = subprocess.run(
        [sys.executable, script, "--rows", "20000", "--chunk", "5000", "--steps", "4",
         "--scheduler", client.scheduler.address],
        capture_output=True, text=True, timeout=120, check=True).stdout
    losses = [float(line.split()[3]) for line in out.splitlines() if line.startswith("step")]
    assert len(losses) == 4
    np.testing.assert_allclose(losses[0], np.log(2), atol=1e-6)   # printed to 6 places
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_a_pb_compile_decorated_loss_is_shipped_by_its_name():
    X = np.random.default_rng(4).normal(size=(30, 4))
    w = np.linspace(-1, 1, 4)
    got = pbd.value_and_grad(dask_losses.compiled_squares, w, da.from_array(X, chunks=(8, 4)))
    want = pb.value_and_grad(dask_losses.squares)(w, X)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)


def test_dict_params_keep_their_structure(client):
    X, y, (w, b) = logistic_data(120)
    dX, dy = da.from_array(X, chunks=(50, 3)), da.from_array(y, chunks=(50,))
    value, grads = pbd.value_and_grad(dask_losses.logistic_dict, {"w": w, "b": b}, (dX, dy),
                                      client=client)
    assert isinstance(grads, dict) and set(grads) == {"w", "b"}
    assert_close((value, (grads["w"], grads["b"])), whole(flat_sum, (w, b), X, y))


def _set_cache_dir(path):
    """On a worker: use ``path`` as the disk cache (None: back to the default)."""
    if path is None:
        os.environ.pop("PULLBACK_CACHE_DIR", None)
    else:
        os.environ["PULLBACK_CACHE_DIR"] = path


def test_pullback_compile_fills_the_workers_shared_cache_ahead_of_time(client, tmp_path):
    import subprocess
    cache_dir = str(tmp_path / "shared-cache")
    env = dict(os.environ, PULLBACK_CACHE_DIR=cache_dir)
    done = subprocess.run([sys.executable, "-m", "pullback", "compile",
                           os.path.join(TESTS, "dask_losses.py")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "logistic_ahead_of_time: 2 variants" in done.stdout
    old = {w: v for w, v in client.run(os.environ.get, "PULLBACK_CACHE_DIR").items()}
    client.run(_set_cache_dir, cache_dir)
    try:
        X, y, params = logistic_data(120, seed=5)
        data = (da.from_array(X, chunks=(25, 3)), da.from_array(y, chunks=(25,)))
        before = client.run(pb.stats)
        got = pbd.value_and_grad(dask_losses.logistic_ahead_of_time, params, data,
                                 client=client)
        after = client.run(pb.stats)
    finally:
        for worker, value in old.items():
            client.run(_set_cache_dir, value, workers=[worker])
    assert_close((got[0], got[1]), whole(flat_sum, params, X, y))
    hits = sum(after[w]["cache_hits"] - before[w]["cache_hits"] for w in after)
    assert hits >= 1   # each worker that ran a partition loaded the variant from the disk
    for w in after:    # ... and none transformed the loss itself
        assert after[w]["functions_transformed"] == before[w]["functions_transformed"], w
