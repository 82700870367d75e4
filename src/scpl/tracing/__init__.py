"""Splitting any model by the names of its submodules: capture it as one graph
(:mod:`~scpl.tracing.capture`), keep its training-mode ops switchable
(:mod:`~scpl.tracing.modes`), cut the graph into blocks (:mod:`~scpl.tracing.cut`) and find the
places where it can be cut (:mod:`~scpl.tracing.units`)."""
