"""clipfeed: a self-hostable short-video platform."""

import os

# A clipfeed process computes each request on one core and scales with processes (uvicorn
# --workers, `clipfeed worker`); every native call that wants threads asks for them explicitly.
# The native libraries' own pools (OpenMP under faiss and LightGBM, OpenBLAS under numpy) start
# one thread per core by default: two API processes' pools oversubscribed the 2 cores they
# share, a search woke a second thread that spun while the other process ran, and candidate
# sources stalled past their budgets (bench/feed, 2 uvicorn workers at 30k videos: ~120 sources
# dropped and 119-137 pages/s; with one thread, 25 dropped and 248 pages/s). Read once, when each
# library loads, so set here, before any of them is imported; a deployment's own setting wins.
for _pool in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_pool, "1")

__version__ = "0.1.0"
