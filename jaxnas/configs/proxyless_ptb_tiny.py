"""ProxylessNAS on the tiny PTB recurrent cell search: ``advantagenas_ptb_tiny.py`` with the strategy
swapped (same model, data slice, steps and theta optimiser: Adam 3e-2 (0.9, 0.999) cosine, clip 1);
final architecture: argmax, as sec. 5.3. For the full App. E run use ``advantagenas_ptb.py`` with
``strategy.name=proxyless``.

    python -m jaxnas search configs/proxyless_ptb_tiny.py --workdir runs/proxyless_ptb_tiny
"""
from pathlib import Path

from jaxnas.config import raw_config


def get_config():
    cfg = raw_config(Path(__file__).resolve().with_name("advantagenas_ptb_tiny.py"))
    s = cfg["strategy"]
    cfg["strategy"] = {"name": "proxyless", "optimizer": "adam", "lr": s["lr"], "b1": s["b1"], "b2": s["b2"],
                       "clip": s["clip"], "lr_schedule": s["lr_schedule"], "final": "argmax"}
    return cfg
