"""MA2ML with the NAS agent alone on the NAS-Bench-201 table (a plain space is one agent): 100 rounds
of 8 table queries, the reward the 12-epoch CIFAR-10 validation accuracy (configs/nb201_table.py's
setting, for comparison with REINFORCE there).

    jaxnas search configs/ma2ml_nb201_table.py evaluator.path=/path/to/nb201_accuracies.csv.gz
"""
from pathlib import Path

from jaxnas.config import raw_config

try:
    _HERE = Path(__file__).resolve().parent
except NameError:  # exec'd without a file
    _HERE = Path("configs")


def get_config():
    cfg = raw_config(_HERE / "nb201_table.py")   # the table, its reward and the query budget
    cfg["strategy"] = {"name": "ma2ml", "lr": 0.05, "final": "process_best"}
    return cfg
