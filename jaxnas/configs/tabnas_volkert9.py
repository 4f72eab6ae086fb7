"""TabNAS on Volkert, 9-layer search space (App. C, Fig. 11(d)/12(d)).

Data: you must provide it: OpenML data set 41166 "volkert" (58,310 rows, 180 numeric features,
10 classes), saved as ``.npz`` with ``X`` float [N, 180] and ``y`` [N] (or a CSV whose last column is the
class). Split: 80% training / 20% validation (App. B.2).
Run: ``jaxnas search configs/tabnas_volkert9.py data.path=/path/volkert.npz``.

Search space (App. B.2): every hidden layer picks its width from the 12 sizes {8, 16, ..., 144, 160} (``TABNAS_WIDTHS_12``); 9 hidden layers (5.2e9 architectures: P(V) only by Monte-Carlo)
Weight training (Table 2): batch 32, SGD with momentum 0.9, lr 0.01 (constant), 120 stand-alone epochs;
the search runs 240 epochs (2x stand-alone, as the paper's 120-epoch Criteo search), i.e.
``search.steps`` = 240 * 46,648 training rows // 32 = 349,860 steps; with your own
row count set ``search.steps`` to ``epochs * rows // batch`` (the engine gives the strategy its step count).
TabNAS (Alg. 1-3): rejection-based REINFORCE with a Monte-Carlo P̂(V) of N = 5,000,000 samples, RL lr 0.005,
layer warm-up over the first 25% of the steps, Q = 1 - loss (``q_offset=1``).
Budget: 78,114 parameters, the reference 144-128-112-16-16-48-144-24-160 (0.3126 +- 0.0050 balanced error, App. C).
Abs Reward baseline (TuNAS): replace the ``strategy`` dict by
``{"name": "tunas_abs", "target": 78114, "beta": -2.0, "lr": 0.005, "q_offset": 1.0}`` (the paper gives no medium |beta| for this space; 2 is its Volkert 4-layer value).

Differences from the paper: the paper's Adam has eps 1e-3 (the engine's optimizer uses optax's default)
and every layer has layer normalisation (the MLP supernet has none); numeric features are standardised
with training statistics (``data.standardize``).
"""


def get_config():
    n_train, batch, search_epochs = 46648, 32, 240
    steps = search_epochs * n_train // batch
    return {
        "seed": 0,
        "data": {"name": "tabular", "path": None, "val_fraction": 0.2},
        "space": {"name": "mlp", "num_layers": 9, "widths": [8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160]},
        "strategy": {"name": "tabnas", "budget": 78114, "pv": "mc", "num_mc_samples": 5000000,
                     "lr": 0.005, "warmup_frac": 0.25, "q_offset": 1.0},
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "schedule": "constant"},
        "search": {"steps": steps, "batch_size": batch, "chunk": 500, "checkpoint_every": 50000},
    }
