"""Render docs/memory.md's tables from a fresh measurement (``scpl.bench.memory``), so that the
page never drifts from the code (``tests/test_bench.py`` checks ResNet-32's rows)::

    python benchmarks/memory_page.py [docs/memory.md]
"""

from __future__ import annotations

import sys
from pathlib import Path

from scpl.bench.memory import PAGE_BATCH, markdown, run

PAGE = Path(__file__).resolve().parents[1] / "docs" / "memory.md"


def tables() -> str:
    """Both cuts' tables, equal units and equal memory, at the page's batch."""
    out = []
    for cut_by, title in (("equal", "equal cuts"), ("memory", "memory cuts")):
        result = run(batch=PAGE_BATCH, cut_by=cut_by, log=lambda line: None)
        out += [f"## {title} (MiB at batch {PAGE_BATCH})", "", *markdown(result), ""]
    return "\n".join(out)


def main() -> None:
    page = Path(sys.argv[1]) if len(sys.argv) > 1 else PAGE
    start, end = "<!-- tables:start -->", "<!-- tables:end -->"
    text = page.read_text()
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    page.write_text(f"{head}{start}\n{tables()}{end}{tail}")


if __name__ == "__main__":
    main()
