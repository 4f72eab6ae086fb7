"""MANAS-LS on CIFAR-10: 20 unique DARTS cells, least-squares credit + Zipf sampling (sec. 5, App. B.1).

The settings of ``manas_darts20.py`` (DARTS protocol, 20 unique cells, 280 agents x 8 ops) with
MANAS-LS's schedule (App. B.1): one epoch of weight training with the scores frozen, then epochs in
which weights and scores are frozen and rows of Z are collected "until the number of rows is greater
than the number of columns" (280 x 8 = 2,240 columns: 6 epochs of 391 steps = 2,346 rows on one
device; with D devices every step collects D rows), then the least-squares solve, and again. The
strategy's default schedule does this (``strategy.train_steps``, ``strategy.collect_steps``):
the paper's 500 search epochs for 20 cells (sec. 5), read as 500 weight epochs, need 500 x 7 epochs of
steps in all.

    python -m jaxnas search configs/manas_ls_darts20.py data.data_dir=/path/to/tfds
"""
from pathlib import Path

from jaxnas.config import raw_config

try:
    _HERE = Path(__file__).resolve().parent
except NameError:  # exec'd without a file
    _HERE = Path("configs")
COLLECT_EPOCHS, WEIGHT_EPOCHS = 6, 500


def get_config():
    cfg = raw_config(_HERE / "manas_darts20.py")
    per_epoch = cfg["search"]["chunk"]                 # 391 steps
    cfg["strategy"] = {"name": "manas_ls", "credit": "linear", "sampler": "zipf", "final": "argmax",
                       "train_steps": per_epoch, "collect_steps": COLLECT_EPOCHS * per_epoch}
    cfg["search"]["steps"] = WEIGHT_EPOCHS * (1 + COLLECT_EPOCHS) * per_epoch
    return cfg
