"""The results grid behind docs/results.md: what runs (:mod:`.tiers`, with the ablation rows
in ``ablations.yaml``), running and caching it (:mod:`.execute`), and the page's tables
(:mod:`.tables`). ``benchmarks/results.py`` is its command line."""
