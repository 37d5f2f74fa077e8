"""pullback.cluster: data-parallel gradients on a distributed engine (Dask).

The layer above ``runtime`` and ``compiler``: it calls the public functional API
(``value_and_grad``) on each partition of the data, on the engine's workers, and
reduces the results.  Neither lower layer imports it.
"""
