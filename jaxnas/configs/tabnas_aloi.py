"""TabNAS on Aloi, 4-layer search space (App. B.2, App. F side note: reference 64-192-48-32).

Data: you must provide it: OpenML data set 42396 "aloi" (108,000 rows, 128 numeric features,
1,000 classes), saved as ``.npz`` with ``X`` float [N, 128] and ``y`` [N] (or a CSV whose last column is the
class). Split: 80% training / 20% validation (App. B.2).
Run: ``jaxnas search configs/tabnas_aloi.py data.path=/path/aloi.npz``.

Search space (App. B.2): every hidden layer picks its width from the 20 sizes {8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 384, 512}; 4 hidden layers (the paper does not list Aloi's space; its reference has 4 layers)
Weight training (Table 2): batch 128, Adam, lr 0.0005 (constant), 50 stand-alone epochs;
the search runs 100 epochs (2x stand-alone, as the paper's 120-epoch Criteo search), i.e.
``search.steps`` = 100 * 86,400 training rows // 128 = 67,500 steps; with your own
row count set ``search.steps`` to ``epochs * rows // batch`` (the engine gives the strategy its step count).
TabNAS (Alg. 1-3): rejection-based REINFORCE with a Monte-Carlo P̂(V) of N = 32,768 samples, RL lr 0.005,
layer warm-up over the first 25% of the steps, Q = 1 - loss (``q_offset=1``).
Budget: 64,568 parameters, the reference 64-192-48-32 (0.0662 +- 0.0011 balanced error).
Abs Reward baseline (TuNAS): replace the ``strategy`` dict by
``{"name": "tunas_abs", "target": 64568, "beta": -25.0, "lr": 0.005, "q_offset": 1.0}`` (|beta| = 25 is the paper's medium value here, App. E.2).

Differences from the paper: the paper's Adam has eps 1e-3 (the engine's optimizer uses optax's default)
and every layer has layer normalisation (the MLP supernet has none); numeric features are standardised
with training statistics (``data.standardize``).
"""


def get_config():
    n_train, batch, search_epochs = 86400, 128, 100
    steps = search_epochs * n_train // batch
    return {
        "seed": 0,
        "data": {"name": "tabular", "path": None, "val_fraction": 0.2},
        "space": {"name": "mlp", "num_layers": 4},
        "strategy": {"name": "tabnas", "budget": 64568, "pv": "mc", "num_mc_samples": 32768,
                     "lr": 0.005, "warmup_frac": 0.25, "q_offset": 1.0},
        "optimizer": {"name": "adam", "lr": 0.0005, "schedule": "constant"},
        "search": {"steps": steps, "batch_size": batch, "chunk": 500, "checkpoint_every": 50000},
    }
