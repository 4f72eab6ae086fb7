"""MANAS and MANAS-LS on the NAS-Bench-201 table: no supernet, no data, seconds on a CPU.

The reward of a cell is its 12-epoch CIFAR-10 validation accuracy (loss = -reward); 8 samples per
step (vmapped lanes), 100 steps = 800 table queries. MANAS (coordinated + EXP3) by default;
``strategy.name=manas_ls`` for least squares + Zipf (a solve every 31 steps: 6 x 5 = 30 columns; the
table has no weights, so the schedule is strategy steps only).

    jaxnas search configs/manas_nb201_table.py [evaluator.path=/path/to/nb201_accuracies.csv.gz]
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
        "strategy": {"name": "manas", "final": "argmax"},
        "search": {"steps": 100, "samples": 8, "chunk": 100, "checkpoint_every": 100},
    }
