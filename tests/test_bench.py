"""The pipeline benchmark end to end at a tiny size (its figures are measured, not asserted)."""

import json
import subprocess
import sys

import pytest
import torch

from scpl.bench.pipeline import neighbour_cuts


def test_neighbour_cuts():
    assert neighbour_cuts([2, 3]) == [[2, 3], [1, 4], [3, 2]]
    assert neighbour_cuts([1, 1, 2]) == [[1, 1, 2], [1, 2, 1]]  # no block may become empty


def test_the_peer_pipeline_gets_the_fastest_of_the_neighbouring_cuts(monkeypatch):
    """The search itself, on known speeds (timing stays in the benchmark): the decoupled cut and
    its one-layer neighbours are each tried with both schedules, the fastest kept."""
    from scpl.bench import pipeline, workers
    from scpl.bench.settings import Settings

    speed = {("[2, 3]", "gpipe"): 10.0, ("[2, 3]", "1f1b"): 11.0, ("[1, 4]", "gpipe"): 9.0,
             ("[1, 4]", "1f1b"): 8.0, ("[3, 2]", "gpipe"): 12.0, ("[3, 2]", "1f1b"): 7.0}
    tried = []

    def run_peer(s, counts, schedule):
        tried.append((str(counts), schedule))
        return speed[str(counts), schedule]

    monkeypatch.setattr(workers, "run_peer", run_peer)
    best, trials = pipeline.best_peer_cut(Settings(), [2, 3])
    assert best == [3, 2] and trials == {"[2, 3]": 11.0, "[1, 4]": 9.0, "[3, 2]": 12.0}
    assert sorted(tried) == sorted(speed)


@pytest.mark.slow
def test_bench_pipeline_json_has_the_promised_fields_with_replicas():
    """One run of the benchmark (without the peer-cut search) covers every configuration it times."""
    proc = subprocess.run(
        [sys.executable, "-m", "scpl", "bench", "pipeline", "--replicas", "2", "--batch-size", "16",
         "--micro-batch", "8", "--steps", "2", "--warmup", "1", "--repeats", "1", "--no-peer-search",
         "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("stages", "sequential_sps", "threads_sps", "processes_sps", "bp_sps", "bp_all_cores_sps",
                "peer_pipeline_sps", "speedup_processes_vs_sequential", "efficiency",
                "speedup_vs_peer_pipeline", "max_param_diff", "micro_batch", "ddp_sps", "speedup_vs_ddp",
                "replicated_sps", "speedup_replicated_vs_processes"):
        assert key in result, key
    assert result["model"] == "cnn" and result["replicas"] == 2
    assert result["stages"] == 2 and result["micro_batch"] == 8
    assert all(result[k] > 0 for k in ("sequential_sps", "threads_sps", "processes_sps", "peer_pipeline_sps",
                                       "ddp_sps", "replicated_sps"))
    assert result["efficiency"] == result["speedup_processes_vs_sequential"] / 2
    # The executors compute the same parameters: this is exact, not a speed claim.
    assert result["max_param_diff"] == 0.0
    assert sum(result["blocks"]) == 17 and result["peer_blocks"] == result["blocks"]  # no search asked


def test_the_parameter_heavy_workload_trains_alike_on_threads_and_in_sequence():
    """``--model embed`` (a 12.8M-parameter embedding table): the benchmark's own builders, one
    model per executor, the same parameters after its batches (its rank groups are the cnn's)."""
    from scpl.bench.settings import Settings
    from scpl.bench.workloads import build, make_batches
    from scpl.executors import SequentialExecutor, ThreadedExecutor

    s = Settings(model="embed", batch_size=16, micro_batch=8, steps=2, warmup=1)
    states = []
    for executor in (SequentialExecutor(s.micro_batches), ThreadedExecutor(s.micro_batches)):
        model = build(s, s.method, [1, 5])
        model.fit(make_batches(s), executor=executor, progress=False)
        states.append(model.state_dict())
    assert states[0]["blocks.0.layers.0.embed.weight"].shape == (100_000, 128)
    for k, v in states[0].items():
        assert torch.equal(v, states[1][k]), k


def test_bench_memory_json_and_what_it_shows():
    proc = subprocess.run([sys.executable, "-m", "scpl", "bench", "memory", "--batch-size", "4",
                           "--models", "resnet32", "--ks", "2", "4", "16", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    m = result["models"]["resnet32"]
    bp, peaks = m["bp_peak_bytes"], m["decoupled_peak_bytes"]
    assert set(peaks) == {"2", "4", "16"}
    assert peaks["16"] < peaks["4"] < peaks["2"] < bp  # more blocks, less held at once
    assert all(len(m["decoupled_block_bytes"][k]) == int(k) for k in peaks)
    assert max(m["decoupled_block_bytes"]["4"]) == peaks["4"]
    # context branches hold a little more
    assert all(m["contsup_r1e_peak_bytes"][k] >= peaks[k] for k in peaks)


@pytest.mark.slow
def test_bench_gpu_runs_its_cpu_part_and_says_cuda_is_missing():
    proc = subprocess.run([sys.executable, "-m", "scpl", "bench", "gpu", "--cpu-ranks", "2", "64",
                           "--cpu-batch-size", "32", "--cpu-steps", "2", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["cuda"] is False and "CUDA is not available" in result["note"]
    assert "streams" not in result and result["cpu_pipeline"]["K=2"]["processes_sps"] > 0
    assert result["cpu_pipeline"]["K=64"].startswith("skipped")


def test_the_gpu_parts_run_their_logic_on_a_cpu():
    """The GPU parts at a tiny size on the CPU: not a measurement, a check that the code the
    GPU machine will run works (its time there is scarce)."""
    from scpl.bench import gpu

    small = dict(steps=2, warmup=1, batch=8, device="cpu", width=0.0625)
    s = gpu.streams(**small)
    assert s["max_param_diff"] == 0.0 and s["threads_sps"] > 0
    assert gpu.bf16(**small)["bf16_sps"] > 0


@pytest.mark.slow
def test_the_memory_page_holds_what_the_code_measures_now():
    """docs/memory.md's tables are written by benchmarks/memory_page.py; ResNet-32's rows are
    measured again here (a changed default head would change them)."""
    from pathlib import Path

    from scpl.bench.memory import PAGE_BATCH, markdown, run

    page = (Path(__file__).resolve().parents[1] / "docs" / "memory.md").read_text()
    for cut_by in ("equal", "memory"):
        section = page.split(f"## {cut_by} cuts (MiB at batch {PAGE_BATCH})", 1)[1].split("##", 1)[0]
        for line in markdown(run(("resnet32",), batch=PAGE_BATCH, cut_by=cut_by, log=lambda _: None))[2:]:
            assert line in section, f"{cut_by} cuts: {line} is not on the page (benchmarks/memory_page.py)"
