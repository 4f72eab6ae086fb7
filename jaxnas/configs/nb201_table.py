"""REINFORCE on the NAS-Bench-201 table: a search in seconds, no supernet, no data, no GPU.

The reward of a cell is its 12-epoch CIFAR-10 validation accuracy from the benchmark (the
low-fidelity reward NAS-Bench-201 gives its RL and random-search baselines); the result reports the
derived cell's 200-epoch test accuracies on CIFAR-10, CIFAR-100 and ImageNet16-120. The budget is a
number of table queries: ``search.steps`` x ``search.samples`` (one query per sample and step).

The table is ``../shared/data/nasbench201/nb201_accuracies.csv.gz`` when the repository sits next
to it (development machines); pass your own (same columns, see jaxnas/benchmarks/nb201.py):

    jaxnas search configs/nb201_table.py evaluator.path=/path/to/nb201_accuracies.csv.gz
"""
from pathlib import Path

try:
    _REPO = Path(__file__).resolve().parents[2]
except NameError:  # exec'd without a file
    _REPO = Path(".")
DEFAULT_TABLE = (_REPO / "..").resolve() / "shared" / "data" / "nasbench201" / "nb201_accuracies.csv.gz"


def get_config():
    return {
        "seed": 0,
        "space": {"name": "nb201"},
        "evaluator": {"name": "table", "path": str(DEFAULT_TABLE) if DEFAULT_TABLE.exists() else None,
                      "reward": "cifar10_valid_12ep"},
        # REINFORCE as NAS-Bench-201 runs it: Adam on the logits, a moving-average baseline
        "strategy": {"name": "reinforce", "lr": 0.05, "final": "argmax"},
        "search": {"steps": 100, "samples": 8, "chunk": 100, "checkpoint_every": 100},
    }
