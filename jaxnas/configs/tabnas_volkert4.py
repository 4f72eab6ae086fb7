"""TabNAS on Volkert, 4-layer search space (sec. 4.1.2, App. C, Fig. 8/12(c)).

Data: you must provide it: OpenML data set 41166 "volkert" (58,310 rows, 180 numeric features,
10 classes), saved as ``.npz`` with ``X`` float [N, 180] and ``y`` [N] (or a CSV whose last column is the
class). Split: 80% training / 20% validation (App. B.2).
Run: ``jaxnas search configs/tabnas_volkert4.py data.path=/path/volkert.npz``.

Search space (App. B.2): every hidden layer picks its width from the 20 sizes {8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 384, 512}; 4 hidden layers (1.6e5 architectures)
Weight training (Table 2): batch 32, SGD with momentum 0.9, lr 0.01 (constant), 120 stand-alone epochs;
the search runs 240 epochs (2x stand-alone, as the paper's 120-epoch Criteo search), i.e.
``search.steps`` = 240 * 46,648 training rows // 32 = 349,860 steps; with your own
row count set ``search.steps`` to ``epochs * rows // batch`` (the engine gives the strategy its step count).
TabNAS (Alg. 1-3): rejection-based REINFORCE with a Monte-Carlo P̂(V) of N = 10,000 samples, RL lr 0.005,
layer warm-up over the first 25% of the steps, Q = 1 - loss (``q_offset=1``).
Budget: 27,882 parameters, the reference 48-160-32-144 (0.3244 +- 0.0040 balanced error, App. C).
Abs Reward baseline (TuNAS): replace the ``strategy`` dict by
``{"name": "tunas_abs", "target": 27882, "beta": -2.0, "lr": 0.005, "q_offset": 1.0}`` (|beta| = 2 is the paper's medium value here, App. E.2).

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
        "space": {"name": "mlp", "num_layers": 4},
        "strategy": {"name": "tabnas", "budget": 27882, "pv": "mc", "num_mc_samples": 10000,
                     "lr": 0.005, "warmup_frac": 0.25, "q_offset": 1.0},
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "schedule": "constant"},
        "search": {"steps": steps, "batch_size": batch, "chunk": 500, "checkpoint_every": 50000},
    }
