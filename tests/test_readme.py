"""The README's first example runs as a user pastes it, and learns."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def first_example() -> str:
    """The first Python block under "Your model, decoupled"."""
    section = README.read_text().split("## Your model, decoupled", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "no Python example under 'Your model, decoupled'"
    return match.group(1)


def test_the_first_example_runs_as_pasted_and_learns(capsys):
    code = first_example()
    assert "model.fit(" in code and "model.evaluate(" in code
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    result = eval("model.evaluate(test_loader)", scope)
    assert set(result) == {"accuracy", "loss"} and result["accuracy"] > 0.9
    assert "'accuracy'" in capsys.readouterr().out  # its own print ran
    assert len(scope["history"]) == 5  # one record per epoch
