"""Running the grid: each run one ``scpl`` process, its result appended to the cache; a run
stopped halfway resumes from its checkpoints (only with the command that made them)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

from .spec import CACHE, Spec


def execute(spec: Spec, out: Path) -> dict:
    cmd = spec.command(out)
    resume = spec.eval_of is None and _resumable(out / spec.name, shlex.join(cmd))  # stopped halfway
    proc = subprocess.run([sys.executable, "-m", "scpl", *cmd[1:], *(["--resume"] if resume else [])],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return {"name": spec.name, "tier": spec.tier, "table": spec.table, "row": spec.row, "seed": spec.seed,
            "command": shlex.join(cmd), "summary": json.loads(proc.stdout.strip().splitlines()[-1]),
            "curves": curves(out / spec.name / "metrics.csv")}


def _resumable(folder: Path, command: str) -> bool:
    """Whether ``folder`` holds checkpoints of this very command, to resume (``--resume``). The
    command is written there first; checkpoints of another command are refused, not resumed: a
    finished run resumed at a larger ``--epochs`` would be extended, not trained afresh."""
    stamp = folder / "command.txt"
    if (folder / "latest.json").exists():
        if not stamp.exists() or stamp.read_text() != command:
            raise RuntimeError(f"{folder} holds checkpoints of another command "
                               f"({stamp.read_text() if stamp.exists() else 'not recorded'}), not of "
                               f"{command}: move the folder away to run it afresh")
        return True
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(command)
    return False


def curves(path: Path) -> dict[str, list[float]]:
    """The whole-model metrics per epoch of a run (validation and training accuracy, lr)."""
    if not path.exists():
        return {}
    import csv

    out: dict[str, dict[int, float]] = {}
    for row in csv.DictReader(open(path)):
        if row["block"] == "":
            out.setdefault(row["name"], {})[int(row["epoch"])] = float(row["value"])
    return {name: [v for _, v in sorted(values.items())] for name, values in out.items()}


def load(path: Path = CACHE) -> dict[str, dict]:
    runs: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interruption: that run is redone
                continue
            runs[record["name"]] = record
    return runs



def run_tier(specs: list[Spec], out: Path, jobs: int, redo: bool = False, cache: Path = CACHE,
             runner: Callable[[Spec, Path], dict] = execute) -> None:
    """Run the specs not cached yet (with ``redo``, all of them: a later cache line replaces an
    earlier one of the same name), ``jobs`` at a time, appending each result to ``cache``.
    An evaluation of a run that is itself in the queue starts once that run has finished (and is
    reported as failed, without running, if that run failed)."""
    out.mkdir(parents=True, exist_ok=True)
    done = {} if redo else load(cache)
    todo = [s for s in specs if s.name not in done]
    print(f"{len(specs) - len(todo)} of {len(specs)} runs cached in {cache}, {len(todo)} to go",
          file=sys.stderr)
    queued = {s.name for s in todo}
    after: dict[str, list[Spec]] = {}  # run name -> the evaluations waiting for it
    for s in todo:
        if s.eval_of in queued:
            after.setdefault(s.eval_of, []).append(s)
    failed = []
    with ThreadPoolExecutor(jobs) as pool, open(cache, "a") as log:
        running = {pool.submit(runner, s, out): s for s in todo if s.eval_of not in queued}
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                spec = running.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # keep the other runs going; report at the end
                    own = str(exc) if isinstance(exc, RuntimeError) else f"{spec.name}: {exc!r}"
                    errors = [own[:2000]] + [f"{e.name} not run: {spec.name} failed"
                                                  for e in after.pop(spec.name, [])]
                    failed += errors
                    print("\n".join(errors), file=sys.stderr)
                    continue
                log.write(json.dumps(result) + "\n")
                log.flush()
                accuracy = {k: v for k, v in result["summary"].items()
                            if k in ("val_accuracy", "test_accuracy", "accuracy")}  # a run's or an eval's
                print(f"{result['name']}: {json.dumps(accuracy)}", file=sys.stderr)
                running.update({pool.submit(runner, e, out): e for e in after.pop(spec.name, [])})
    if failed:
        raise SystemExit(f"{len(failed)} runs failed (see above)")

