"""AdvantageNAS on NAS-Bench-201 **with the zero op** (``none``) in the space (App. F, Table 4).

Everything else as ``advantagenas_nb201.py`` (App. D settings). A sampled zero op gets the worst
moving-average advantage of the other ops on its edge (App. B, eq. 9, gamma = 0.05, App. C: ``decay`` 0.95),
so the search does not stall on it:

    python -m jaxnas search configs/advantagenas_nb201_zero.py data.data_dir=/path/to/tfds
"""
from pathlib import Path

from jaxnas.config import raw_config

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def _base():
    return raw_config(Path(__file__).resolve().with_name("advantagenas_nb201.py"))


def get_config():
    cfg = _base()
    cfg["space"]["ops"] = list(NB201_OPS)
    cfg["strategy"]["zero_op"] = "none"   # App. B rule on for this op
    return cfg
