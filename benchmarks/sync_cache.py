"""Copy finished runs from the cache of a grid run in another checkout into this one's.

A long tier runs from its own checkout of a fixed commit (``benchmarks/results.py``'s
docstring); its finished runs land in that checkout's ``benchmarks/results-cache.jsonl``. This
appends those not yet here (by name), in their order::

    python benchmarks/sync_cache.py /work/grid/benchmarks/results-cache.jsonl [...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grid.execute import load  # noqa: E402
from grid.spec import CACHE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("caches", nargs="+", type=Path)
    args = parser.parse_args()
    here = load(CACHE)
    added = []
    with open(CACHE, "a") as out:
        for cache in args.caches:
            for name, record in load(cache).items():
                if name not in here:
                    out.write(json.dumps(record) + "\n")
                    here[name] = record
                    added.append(name)
    print(f"{len(added)} runs added to {CACHE}: {', '.join(added) or '-'}")


if __name__ == "__main__":
    main()
