"""A tiny AdvantageNAS recurrent cell search on a slice of PTB that runs on a CPU in about a minute.

``advantagenas_ptb.py`` (App. E: SGD lr 20 cosine / clip 0.25 on the weights, Adam 3e-3 (0.9, 0.999)
cosine / clip 1 on theta, dropout 0.5, argmax) on a small model and a slice of the data: 16-unit
embedding and cell, BPTT 10, 16 streams, the first 20,000 training tokens (124 windows = one
epoch) and the first 5,000 validation / test tokens; 120 steps. Theta's learning rate is raised to
3e-2 for the short budget. The vocabulary stays PTB's 10k words.

The same tiny search with another strategy (the other ``configs/*_ptb_tiny.py`` do exactly this):

    python -m jaxnas search configs/advantagenas_ptb_tiny.py --workdir runs/t strategy.name=reinforce
    python -m jaxnas retrain runs/t epochs=1
"""
from pathlib import Path

from jaxnas.config import raw_config

STEPS, BATCH, BPTT = 120, 16, 10


def get_config():
    cfg = raw_config(Path(__file__).resolve().with_name("advantagenas_ptb.py"))
    cfg["data"].update({"max_train": 20_000, "max_val": 5_000})
    cfg["space"].update({"emb_size": 16, "hidden_size": 16, "bptt": BPTT})
    cfg["strategy"]["lr"] = 3e-2
    cfg["search"].update({"steps": STEPS, "batch_size": BATCH, "chunk": 40, "checkpoint_every": 120})
    return cfg
