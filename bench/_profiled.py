"""Run `clipfeed <args>` under cProfile and write the stats when the process is told to stop.

    python bench/_profiled.py STATS_PATH serve --no-workers

uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which would kill `python -m cProfile`
before it writes anything: the handler installed here is the one uvicorn restores and re-raises
into, so it dumps the stats and exits.
"""

from __future__ import annotations

import cProfile
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    path, argv = sys.argv[1], sys.argv[2:]
    profiler = cProfile.Profile()

    def stop(signum, frame):  # noqa: ARG001
        profiler.disable()
        profiler.dump_stats(path)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    from clipfeed.cli import app

    sys.argv = ["clipfeed", *argv]
    profiler.enable()
    try:
        app()
    finally:
        profiler.disable()
        profiler.dump_stats(path)


if __name__ == "__main__":
    main()
