"""One source of names: the registries hold exactly the names the CLI and TrainConfig offer."""

import subprocess
import sys

from scpl import names


def test_every_registry_holds_exactly_the_offered_names():
    from scpl.data.augment import PRESETS
    from scpl.data.datasets import DATASETS
    from scpl.executors import EXECUTORS
    from scpl.heads import FEATURES, PROJECTORS
    from scpl.methods import METHODS
    from scpl.model import LAST_BLOCKS, PRECISIONS
    from scpl.models import MODELS
    from scpl.optim import OPTIMIZERS, SCHEDULES

    pairs = [(names.METHODS, METHODS), (names.MODELS, MODELS), (names.DATASETS, DATASETS),
             (names.OPTIMIZERS, OPTIMIZERS), (names.LR_SCHEDULES, SCHEDULES), (names.AUGMENTATIONS, PRESETS),
             (names.EXECUTORS, EXECUTORS), (names.PRECISIONS, PRECISIONS), (names.PROJECTORS, PROJECTORS),
             (names.FEATURES, FEATURES), (names.LAST_BLOCKS, LAST_BLOCKS)]
    for offered, registry in pairs:
        assert sorted(offered) == sorted(registry)


def test_the_command_line_parses_without_importing_torch():
    code = ("import sys; from scpl.cli import build_parser; "
            "build_parser().parse_args(['train', '--method', 'dascpl']); "
            "from scpl.runner.config import TrainConfig; TrainConfig.from_dict({'method': 'contsup'}); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
