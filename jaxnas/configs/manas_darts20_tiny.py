"""A tiny MANAS search over 20 unique DARTS cells on a CPU (a smoke test of the whole path, not a result).

The settings of ``manas_darts20.py`` on a small network and data set, shortened: C = 4 (paper 16),
batch 16 (64), 40 steps (the paper's 500 epochs x 391 steps), on
the 5,000-image CIFAR-10 subset beside the repository (``../shared/data/cifar10_jpeg_test5k/``,
split in halves: weights / validation loss); pass your own ``.npz`` (X uint8 [N, 32, 32, 3], y):

    python -m jaxnas search configs/manas_darts20_tiny.py data.path=/path/to/images.npz

Compiling the 20-cell sparse supernet (280 switches of 8 ops) takes many minutes on a CPU; with
``space.ops=['none','skip_connect'] space.C=2`` (tests/test_manas.py) a 4-step search takes about
75 s of CPU time, mostly compiling.
"""
from pathlib import Path

from jaxnas.config import raw_config

try:
    _REPO = Path(__file__).resolve().parents[2]
except NameError:  # exec'd without a file: relative to the working directory
    _REPO = Path(".")
DEFAULT_PATH = (_REPO / "..").resolve() / "shared" / "data" / "cifar10_jpeg_test5k" / "cifar10_jpeg_test5k.npz"
STEPS, BATCH = 40, 16


def get_config():
    cfg = raw_config(_REPO / "configs" / "manas_darts20.py")
    cfg["data"] = {"name": "image_npz", "path": str(DEFAULT_PATH), "val_fraction": 0.5, "augment": True}
    cfg["space"].update({"C": 4})
    cfg["search"].update({"steps": STEPS, "batch_size": BATCH, "val_batch_size": BATCH, "chunk": 20,
                          "checkpoint_every": 20, "eval_batch_size": 250})
    return cfg
