"""MANAS and MANAS-LS on the NAS-Bench-201 table: no supernet, no data, seconds on a CPU.

The reward of a cell is its 12-epoch CIFAR-10 validation accuracy (loss = -reward); 8 samples per
step (vmapped lanes), 100 steps = 800 table queries. MANAS (coordinated + EXP3) by default;
``strategy.name=manas_ls`` for least squares + Zipf (a solve every 31 steps: 6 x 5 = 30 columns; the
table has no weights, so the schedule is strategy steps only).

    jaxnas search configs/manas_nb201_table.py [evaluator.path=/path/to/nb201_accuracies.csv.gz]
"""
from pathlib import Path

from jaxnas.config import raw_config

try:
    _HERE = Path(__file__).resolve().parent
except NameError:  # exec'd without a file
    _HERE = Path("configs")


def get_config():
    cfg = raw_config(_HERE / "nb201_table.py")   # the table, its reward and the query budget
    cfg["strategy"] = {"name": "manas", "final": "argmax"}
    return cfg
