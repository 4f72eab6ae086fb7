"""TabNAS on Criteo, 3-layer search space (sec. 4.1.1, Fig. 2/6/9; App. B.2.3).

Data: you must provide it (Criteo is 45.8M labelled rows and is not shipped). ``data.path`` is an
``.npz`` with ``X`` float [N, F] and ``y`` in {0, 1} (or a CSV/TSV whose last column is the label). The paper
feeds F = 1,027 features: the 13 numerical values plus a 39-dimensional embedding of each of the 26
categorical features (DCN-V2 style); this library has no embedding layer, so precompute such features
(e.g. hashed one-hot or learned embeddings). The table is held in memory: subsample (``data.max_train``)
if it does not fit. Split: 90% training / 10% validation (App. B.2).
Run: ``jaxnas search configs/tabnas_criteo.py data.path=/path/criteo.npz``.

Search space (App. B.2): every hidden layer picks its width from the 20 sizes {8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 384, 512}; 3 hidden layers (``space.num_layers=4`` / ``5`` with budgets 59,697 / 75,353 give App. C's 4- and 5-layer spaces, N = 32,768)
Weight training (Table 2): batch 512, Adam, lr 0.002 (cosine decay), 60 stand-alone epochs;
the search runs 120 epochs (2x stand-alone, as the paper's 120-epoch Criteo search), i.e.
``search.steps`` = 120 * 41,258,185 training rows // 512 = 9,669,887 steps; with your own
row count set ``search.steps`` to ``epochs * rows // batch`` (the engine gives the strategy its step count).
TabNAS (Alg. 1-3): rejection-based REINFORCE with a Monte-Carlo P̂(V) of N = 3,072 samples, RL lr 0.005,
layer warm-up over the first 25% of the steps, Q = 1 - loss (``q_offset=1``).
Budget: 41,153 parameters, the reference 32-144-24 (0.4454 +- 0.0003 logistic loss, App. B.2.3).
Abs Reward baseline (TuNAS): replace the ``strategy`` dict by
``{"name": "tunas_abs", "target": 41153, "beta": -1.0, "lr": 0.005, "q_offset": 1.0}`` (|beta| = 1 is the paper's medium value here, App. E.2).

Differences from the paper: the paper's Adam has eps 1e-3 (the engine's optimizer uses optax's default)
and every layer has layer normalisation (the MLP supernet has none); numeric features are standardised
with training statistics (``data.standardize``).
"""


def get_config():
    n_train, batch, search_epochs = 41258185, 512, 120
    steps = search_epochs * n_train // batch
    return {
        "seed": 0,
        "data": {"name": "tabular", "path": None, "val_fraction": 0.1},
        "space": {"name": "mlp", "num_layers": 3},
        "strategy": {"name": "tabnas", "budget": 41153, "pv": "mc", "num_mc_samples": 3072,
                     "lr": 0.005, "warmup_frac": 0.25, "q_offset": 1.0},
        "optimizer": {"name": "adam", "lr": 0.002, "schedule": "cosine"},
        "search": {"steps": steps, "batch_size": batch, "chunk": 500, "checkpoint_every": 50000},
    }
