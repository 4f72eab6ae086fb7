"""MA2ML with the NAS agent alone on the NAS-Bench-201 table (a plain space is one agent): 100 rounds
of 8 table queries, the reward the 12-epoch CIFAR-10 validation accuracy (configs/nb201_table.py's
setting, for comparison with REINFORCE there).

    jaxnas search configs/ma2ml_nb201_table.py evaluator.path=/path/to/nb201_accuracies.csv.gz
"""
from pathlib import Path

try:
    _REPO = Path(__file__).resolve().parents[1]
except NameError:  # exec'd without a file
    _REPO = Path(".")
DEFAULT_TABLE = (_REPO / "..").resolve() / "shared" / "data" / "nasbench201" / "nb201_accuracies.csv.gz"


def get_config():
    return {
        "seed": 0,
        "space": {"name": "nb201"},
        "evaluator": {"name": "table", "path": str(DEFAULT_TABLE) if DEFAULT_TABLE.exists() else None,
                      "reward": "cifar10_valid_12ep"},
        "strategy": {"name": "ma2ml", "lr": 0.05, "final": "process_best"},
        "search": {"steps": 100, "samples": 8, "chunk": 100, "checkpoint_every": 100},
    }
