"""TabNAS on Higgs (OpenML 23512), a 3-layer search space (App. B.2).

Data: you must provide it: OpenML data set 23512 "higgs" (98,050 rows, 28 numeric features,
2 classes; drop rows with missing values), saved as ``.npz`` with ``X`` float [N, 28] and ``y`` [N] in
{0, 1} (or a CSV whose last column is the class). Split: 80% training / 20% validation (App. B.2).
Run: ``jaxnas search configs/tabnas_higgs.py data.path=/path/higgs.npz``.
The paper gives no Higgs search space or reference: it says FFNs under 5,000 parameters reach
near-SOTA accuracy and both rewards find the Pareto-optimal references. The 3 layers and the budget of
5,000 parameters here are our choice.

Search space (App. B.2): every hidden layer picks its width from the 20 sizes {8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 384, 512}; 3 hidden layers (our choice)
Weight training (Table 2): batch 64, SGD (no momentum stated), lr 0.05 (constant), 60 stand-alone epochs;
the search runs 120 epochs (2x stand-alone, as the paper's 120-epoch Criteo search), i.e.
``search.steps`` = 120 * 78,440 training rows // 64 = 147,075 steps; with your own
row count set ``search.steps`` to ``epochs * rows // batch`` (the engine gives the strategy its step count).
TabNAS (Alg. 1-3): rejection-based REINFORCE with a Monte-Carlo P̂(V) of N = 4,096 samples, RL lr 0.005,
layer warm-up over the first 25% of the steps, Q = 1 - loss (``q_offset=1``).
Budget: 5,000 parameters (our choice, see above).
Abs Reward baseline (TuNAS): replace the ``strategy`` dict by
``{"name": "tunas_abs", "target": 5000, "beta": -1.0, "lr": 0.005, "q_offset": 1.0}`` (beta not given for Higgs).

Differences from the paper: the paper's Adam has eps 1e-3 (the engine's optimizer uses optax's default)
and every layer has layer normalisation (the MLP supernet has none); numeric features are standardised
with training statistics (``data.standardize``).
"""


def get_config():
    n_train, batch, search_epochs = 78440, 64, 120
    steps = search_epochs * n_train // batch
    return {
        "seed": 0,
        "data": {"name": "tabular", "path": None, "val_fraction": 0.2},
        "space": {"name": "mlp", "num_layers": 3},
        "strategy": {"name": "tabnas", "budget": 5000, "pv": "mc", "num_mc_samples": 4096,
                     "lr": 0.005, "warmup_frac": 0.25, "q_offset": 1.0},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.0, "schedule": "constant"},
        "search": {"steps": steps, "batch_size": batch, "chunk": 500, "checkpoint_every": 50000},
    }
