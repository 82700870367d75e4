"""One source of names: the registries hold exactly the names the CLI and TrainConfig offer."""

import subprocess
import sys

from scpl import names


def test_every_registry_holds_exactly_the_offered_names():
    from scpl.assembly import PRECISIONS
    from scpl.data.augment import PRESETS
    from scpl.data.datasets import DATASETS
    from scpl.executors import EXECUTORS
    from scpl.heads import FEATURES, PROJECTORS
    from scpl.methods import METHODS
    from scpl.models import MODELS
    from scpl.optim import OPTIMIZERS, SCHEDULES

    pairs = [(names.METHOD_NAMES, METHODS), (names.MODEL_NAMES, MODELS), (names.DATASET_NAMES, DATASETS),
             (names.OPTIMIZER_NAMES, OPTIMIZERS), (names.SCHEDULE_NAMES, SCHEDULES),
             (names.AUGMENTATION_NAMES, PRESETS), (names.EXECUTOR_NAMES, EXECUTORS),
             (names.PRECISION_NAMES, PRECISIONS), (names.PROJECTOR_NAMES, PROJECTORS),
             (names.FEATURE_NAMES, FEATURES)]
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
