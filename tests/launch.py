"""Start pipeline ranks as real, independent processes (as on separate machines: no torchrun agent)."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).parent / "scripts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(script: str, world: int, *args: str,
              timeout: float = 120) -> tuple[list[int], list[str], float]:
    """Run ``world`` ranks of ``script``; return their exit codes, their outputs and the seconds taken."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world),
               OMP_NUM_THREADS="1")
    start = time.monotonic()
    procs = [
        subprocess.Popen([sys.executable, str(SCRIPTS / script), *args],
                         env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(world)
    ]
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"{script}: ranks still running after {timeout} s (hang)")
        outputs.append(out)
    return [p.returncode for p in procs], outputs, time.monotonic() - start
