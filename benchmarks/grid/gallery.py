"""The model gallery (docs/models.md): every model family scpl is tested on, cut into blocks
by name, by K or automatically, trained briefly with BP and with each local objective on a real
data set (Fashion-MNIST for images, the Debian descriptions for text).

Its timm rows need the environment of the timm tests (torch 2.14.1 + torchvision 0.29.1):
run the tier with that environment's Python.
"""

from __future__ import annotations

import statistics
from typing import NamedTuple

from .spec import Spec, portable

IMAGE_RECIPE, TEXT_RECIPE = "fmnist-gallery", "debian-gallery"
METHODS = ("bp", "scpl", "deinforeg", "greedy")


class Entry(NamedTuple):
    """A gallery row: the family, the model as ``--model`` names it, its arguments, and how it
    is cut."""

    family: str
    model: str
    recipe: str
    args: tuple[str, ...]
    cut: str  # how the blocks are chosen, as the page says it

    @property
    def key(self) -> str:
        """The row's part of its runs' cache names."""
        return self.model.replace(":", "-").replace("_", "-")


def _set_args(text: str) -> tuple[str, ...]:
    return ("--set", f"model_args={text}")


def _cut(*args: str) -> tuple[str, ...]:
    return ("--blocks", *args) if len(args) == 1 else args


ENTRIES = (
    Entry("your own nn.Sequential (CNN)", "small_cnn", IMAGE_RECIPE, _cut("4"), "4 blocks of its children"),
    Entry("ResNet", "timm:resnet18", IMAGE_RECIPE, _cut("layer2,layer3,layer4"), "layer2, layer3, layer4"),
    Entry("ConvNeXt", "timm:convnext_atto", IMAGE_RECIPE,
          ("--set", "image_size=32", "--blocks", "auto", "--num-blocks", "4"), "auto, K=4 (32x32 images)"),
    Entry("ViT", "timm:vit_tiny_patch16_224", IMAGE_RECIPE,
          (*_set_args("{depth: 6}"), "--blocks", "blocks.2,blocks.4"), "blocks.2, blocks.4 (depth 6)"),
    Entry("EfficientNet", "timm:efficientnet_b0", IMAGE_RECIPE, _cut("4"), "K=4 at equal FLOPs"),
    Entry("MobileNetV3", "timm:mobilenetv3_small_100", IMAGE_RECIPE, _cut("4"), "K=4 at equal FLOPs"),
    Entry("RegNet", "timm:regnetx_002", IMAGE_RECIPE, _cut("s2,s3,s4"), "s2, s3, s4"),
    Entry("LSTM (reference)", "text_lstm", TEXT_RECIPE, ("--blocks", "4", "--set", "embeddings=glove"),
          "embedding + 3 BiLSTM blocks"),
    Entry("BERT-style encoder", "hf:bert", TEXT_RECIPE,
          (*_set_args("{hidden_size: 64, num_hidden_layers: 4, num_attention_heads: 4, "
                      "intermediate_size: 128}"), "--blocks", "4"), "K=4 at equal FLOPs"),
    Entry("DistilBERT", "hf:distilbert", TEXT_RECIPE,
          (*_set_args("{dim: 64, n_layers: 4, n_heads: 4, hidden_dim: 128}"), "--blocks", "4"),
          "K=4 at equal FLOPs"),
    Entry("GPT-style decoder", "hf:gpt2", TEXT_RECIPE,
          (*_set_args("{n_embd: 64, n_layer: 4, n_head: 4}"),
           "--blocks", "transformer.h.1,transformer.h.2,transformer.h.3"), "transformer.h.1, .h.2, .h.3"),
    Entry("Llama-style decoder", "hf:llama", TEXT_RECIPE,
          (*_set_args("{hidden_size: 64, num_hidden_layers: 4, num_attention_heads: 4, "
                      "num_key_value_heads: 4, intermediate_size: 128}"),
           "--blocks", "auto", "--num-blocks", "4"), "auto, K=4"),
)


def gallery_runs() -> list[Spec]:
    """Every entry with BP and each local objective, seed 0."""
    return [Spec(f"gallery-{e.key}-{m}", "gallery", e.key, m,
                 ("--config", e.recipe, "--model", e.model, *e.args, "--method", m))
            for e in ENTRIES for m in METHODS]


def gallery_table(runs: dict[str, dict]) -> list[str]:
    """One row per model: the cut, the test accuracy of BP and each method's gap to it, and
    the commands in a collapsed block."""
    rows, commands = [], []
    for e in ENTRIES:
        found = {m: runs.get(f"gallery-{e.key}-{m}") for m in METHODS}
        if not any(found.values()):
            continue
        bp = found["bp"]["summary"]["test_accuracy"] if found["bp"] else None
        cells = []
        for m in METHODS:
            r = found[m]
            if r is None:
                cells.append("-")
                continue
            acc = 100 * r["summary"]["test_accuracy"]
            cells.append(f"{acc:.2f}" if m == "bp" or bp is None else f"{acc:.2f} ({acc - 100 * bp:+.2f})")
            commands.append(f"- `{portable(r['command'])}`")
        points = next((r["summary"].get("split_points") for r in found.values() if r and r["summary"].get(
            "split_points")), None)
        where = ", ".join(points) if points else e.cut
        data = "Fashion-MNIST" if e.recipe == IMAGE_RECIPE else "Debian"
        rows.append(f"| {e.family} | `{e.model}` | {data} | {where} | {' | '.join(cells)} |")
    if not rows:
        return []
    seconds = [r["summary"]["train_seconds"] for r in runs.values() if r["name"].startswith("gallery-")]
    return ["| family | model | data | blocks begin at | BP test % | SCPL (gap to BP) | DeInfoReg | greedy |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |", *rows, "",
            f"{len(seconds)} runs, {statistics.median(seconds) / 60:.1f} minutes of training each "
            "(median, one core).", "",
            "<details><summary>The commands</summary>", "", *commands, "", "</details>", ""]
