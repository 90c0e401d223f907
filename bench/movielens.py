"""`clipfeed eval` on a real log of the u.data layout: MovieLens 100k (943 users, 1,682 movies,
100,000 ratings, 1997-98; F. Maxwell Harper and Joseph A. Konstan, "The MovieLens Datasets:
History and Context", ACM TiiS 5(4), 2015 — GroupLens' terms: research use, no redistribution).

Nothing of it is in this repository. This machine reaches PyPI, and the RecBole package's wheel
carries the ratings as an example dataset (`recbole/dataset_example/ml-100k/ml-100k.inter`, the
same rows as `u.data` under a header line), so the script fetches that wheel once with
`pip download` into a cache folder outside the repository, checks the file (100,000 rows, 943
users, 1,682 items, ratings 1-5), writes it in the u.data layout and runs the evaluation: the same
temporal split and models as `clipfeed eval --log`, with clipfeed's NDCG@20 against ALS's.

Usage: `python bench/movielens.py [--cache DIR] [--json]` (about a minute of CPU; the fetch is
~2 MB). `--log PATH` evaluates a u.data file you already have instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "recbole==1.2.1"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
EXPECTED = {"rows": 100_000, "users": 943, "items": 1_682}
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clipfeed" / "movielens"


def fetch_ml100k(cache: Path) -> Path:
    """The MovieLens 100k ratings in the u.data layout, fetched once into `cache`."""
    target = cache / "ml-100k.u.data"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                        "--dest", scratch, WHEEL], check=True)
        wheel = next(Path(scratch).glob("recbole-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            lines = archive.read(MEMBER).decode().splitlines()
        rows = [line.split("\t") for line in lines[1:] if line.strip()]  # the first line is RecBole's header
        check(rows)
        partial = cache / "ml-100k.u.data.part"
        partial.write_text("".join("\t".join(row) + "\n" for row in rows))
        partial.replace(target)
    return target


def check(rows: list[list[str]]) -> None:
    users = {row[0] for row in rows}
    items = {row[1] for row in rows}
    found = {"rows": len(rows), "users": len(users), "items": len(items)}
    if found != EXPECTED or any(len(row) != 4 or row[2] not in "12345" for row in rows):
        raise SystemExit(f"{MEMBER} in {WHEEL} is not MovieLens 100k as expected: {found}, expected {EXPECTED}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the fetched log is kept")
    parser.add_argument("--log", type=Path, help="an existing u.data file (nothing is fetched)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    from rich.console import Console

    from clipfeed.feed.recsys.evaluation import load_log, render_table, run_evaluation

    path = args.log or fetch_ml100k(args.cache)
    result = run_evaluation(load_log(path), seed=args.seed)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        Console().print(render_table(result))


if __name__ == "__main__":
    main()
