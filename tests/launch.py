"""Start pipeline ranks as real, independent processes (as on separate machines: no torchrun agent).

Each rank is its own process with its own memory, joined to the others only by gloo over TCP. The
ranks are forked from a multiprocessing fork server that has imported torch and scpl once, so a
rank starts in milliseconds instead of paying two seconds of imports: the suite starts about a
hundred of them. A test of what happens at interpreter start or exit passes ``fresh=True`` and gets
``python SCRIPT`` in a new interpreter instead.
"""

import multiprocessing
import os
import runpy
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).parent / "scripts"
_PRELOAD = ["torch", "torch._dynamo", "torch.distributed", "scpl", "scpl.executors.distributed",
            "scpl.early_exit", "cases", "transformers.models.bert.modeling_bert"]
"""Imported once by the fork server (one that fails to import is skipped): torch._dynamo is what
a torch optimizer's first parameter group imports (a second), BERT the tests' traced case."""
_context = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(_PRELOAD)
    return _context


def _rank(script: str, args: list[str], env: dict[str, str], log: str) -> None:
    """The body of a forked rank: ``python SCRIPT ARGS`` with ``env``, its output into ``log``."""
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # line-buffered: a killed rank loses nothing
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    sys.argv = [script, *args]
    import torch

    torch.set_num_threads(1)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def run_ranks(script: str, world: int, *args: str, timeout: float = 120,
              fresh: bool = False) -> tuple[list[int], list[str], float]:
    """Run ``world`` ranks of ``script``; return their exit codes (negative: killed by that signal),
    their outputs (stdout and stderr together) and the seconds taken. A rank still running after
    ``timeout`` seconds fails the test as a hang, after every rank is killed."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world),
               OMP_NUM_THREADS="1")
    envs = [dict(env, RANK=str(r), LOCAL_RANK=str(r)) for r in range(world)]
    path = str(SCRIPTS / script)
    start = time.monotonic()
    if fresh:
        return _run_fresh(path, list(args), envs, timeout, start)
    context = _forkserver()
    with tempfile.TemporaryDirectory() as tmp:
        logs = [os.path.join(tmp, f"rank{r}.log") for r in range(world)]
        procs = [context.Process(target=_rank, args=(path, list(args), envs[r], logs[r]))
                 for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(max(0.1, timeout - (time.monotonic() - start)))
            if p.exitcode is None:
                for q in procs:
                    q.kill()
                    q.join()
                raise AssertionError(f"{script}: ranks still running after {timeout} s (hang)")
        outputs = [Path(log).read_text(errors="replace") for log in logs]
    return [p.exitcode for p in procs], outputs, time.monotonic() - start


def _run_fresh(path: str, args: list[str], envs: list[dict[str, str]], timeout: float,
               start: float) -> tuple[list[int], list[str], float]:
    procs = [subprocess.Popen([sys.executable, path, *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for env in envs]
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"{Path(path).name}: ranks still running after {timeout} s (hang)")
        outputs.append(out)
    return [p.returncode for p in procs], outputs, time.monotonic() - start
