"""The depth grid: ResNet-32 on Fashion-MNIST cut into K = 2, 4, 8 and 16 blocks, every method
against BP (docs/results.md, "Depth")."""

from __future__ import annotations

from .spec import SEEDS, Spec

DEPTH_RECIPE = "fmnist-resnet32-depth"
DEPTH_KS = (16, 8, 4, 2)
"""The depths of the depth grid, the deepest first (a partial grid holds the hardest cases)."""
DEPTH_ROWS: dict[str, tuple[str, ...]] = {
    "greedy": ("--method", "greedy"),
    "scpl": ("--method", "scpl"),
    "deinforeg": ("--method", "deinforeg"),
    "dascpl": ("--method", "dascpl"),
    "contsup E": ("--method", "contsup", "--set", "contsup=E"),
    "contsup R1": ("--method", "contsup", "--set", "contsup=R1"),
    "contsup R1E": ("--method", "contsup", "--set", "contsup=R1E"),
    "infopro": ("--method", "greedy", "--set", "infopro=1"),
}
"""The depth grid's rows at every K: each method with its defaults; ContSup in each mode that
adds context (R0 is greedy); InfoPro (greedy's local loss plus the reconstruction of the input
with weight 1)."""
DEPTH_SEEDED: dict[int, tuple[str, ...]] = {}
"""Rows also run at seeds 1 and 2, by K: the two best on validation at seed 0 (with BP)."""


def depth_name(row: str, k: int, seed: int) -> str:
    """A depth run's cache name; BP is one block, the same run at every K."""
    if row == "bp":
        return f"depth-bp-s{seed}"
    return f"depth-k{k}-{row.replace(' ', '-').lower()}-s{seed}"


def depth_runs() -> list[Spec]:
    """Seed 0 of every row at every K (BP first), then seeds 1-2 of BP, BP at twice the budget
    (has it converged?) and seeds 1-2 of :data:`DEPTH_SEEDED`."""
    def spec(row: str, k: int, seed: int) -> Spec:
        args = ("--method", "bp") if row == "bp" else ("--blocks", str(k), *DEPTH_ROWS[row])
        return Spec(depth_name(row, k, seed), "depth", "bp" if row == "bp" else f"k{k}", row,
                    ("--config", DEPTH_RECIPE, *args, "--seed", str(seed)), seed)

    longer = Spec("depth-bp-20ep-s0", "depth", "bp", "bp, 20 epochs",
                  ("--config", DEPTH_RECIPE, "--method", "bp", "--epochs", "20", "--seed", "0"))
    runs = [spec("bp", 1, 0)] + [spec(row, k, 0) for k in DEPTH_KS for row in DEPTH_ROWS]
    runs += [spec("bp", 1, seed) for seed in SEEDS[1:]] + [longer]
    return runs + [spec(row, k, seed) for seed in SEEDS[1:] for k, rows in DEPTH_SEEDED.items()
                   for row in rows]
