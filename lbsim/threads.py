"""How many threads the numerical libraries may use: one BLAS thread around the fluid model and the optimum.

The fluid model and the optimum make many small or medium matrix products
(one per step or Newton iteration); a BLAS pool of several threads then
spends more time handing work out and spinning than computing, and on a
small machine it competes with the processes of a sweep. Measured on two
cores: the 100 x 1000 optimum (``benchmarks/bench_optimum.py``) takes about
0.5 s with one BLAS thread and about 2 s with the default pool.

:func:`blas_threads` uses threadpoolctl (the scikit-learn developers'
library that finds every loaded BLAS and OpenMP runtime and sets its pool
size) when it is installed, and does nothing otherwise. ``LBSIM_BLAS_THREADS``
(an integer; ``0``: leave the pools alone) overrides the limit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["blas_threads"]

#: BLAS threads inside :func:`blas_threads` unless LBSIM_BLAS_THREADS says otherwise
DEFAULT_LIMIT = 1


@contextlib.contextmanager
def blas_threads(limit: int | None = None) -> Iterator[None]:
    """Limit the BLAS thread pools to ``limit`` threads (default: ``LBSIM_BLAS_THREADS``, else 1) inside the block."""
    if limit is None:
        limit = int(os.environ.get("LBSIM_BLAS_THREADS", DEFAULT_LIMIT))
    if limit <= 0:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:  # an optional speed-up: without it the pools keep their size
        yield
        return
    with threadpool_limits(limits=limit, user_api="blas"):
        yield
