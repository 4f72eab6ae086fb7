"""A tiny MANAS-LS search over 20 unique DARTS cells on a CPU (smoke test, not a result).

``manas_darts20_tiny.py`` with least-squares credit + Zipf and App. B.1's schedule scaled down:
rounds of 10 weight steps and 30 row-collection steps (a solve after each; rows < the 2,240 columns,
so the minimum-norm solution of the pseudo-inverse is what the agents rank by), 80 steps in all.

    python -m jaxnas search configs/manas_ls_darts20_tiny.py data.path=/path/to/images.npz
"""
from pathlib import Path

from jaxnas.config import raw_config

try:
    _HERE = Path(__file__).resolve().parent
except NameError:  # exec'd without a file
    _HERE = Path("configs")


def get_config():
    cfg = raw_config(_HERE / "manas_darts20_tiny.py")
    cfg["strategy"] = {"name": "manas_ls", "credit": "linear", "sampler": "zipf", "final": "argmax",
                       "train_steps": 10, "collect_steps": 30}
    cfg["search"].update({"steps": 80, "chunk": 10, "checkpoint_every": 40})
    return cfg
