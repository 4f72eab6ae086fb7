"""Tiny search configs for engine tests (a Connect-4 subset, 2 small layers)."""


def tiny_config(strategy="reinforce", steps=40, **search):
    cfg = {
        "seed": 0,
        "data": {"name": "connect4", "max_train": 2000, "val_fraction": 0.1},
        "space": {"name": "mlp", "num_layers": 2, "widths": [4, 8, 16]},
        "strategy": {"name": strategy, "lr": 0.05},
        "optimizer": {"name": "adam", "lr": 1e-2},
        "search": {"steps": steps, "batch_size": 32, "chunk": 10, "checkpoint_every": 10, **search},
    }
    if strategy == "random":
        cfg["strategy"] = {"name": "random"}
    return cfg
