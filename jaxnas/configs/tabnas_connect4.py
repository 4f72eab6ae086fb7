"""TabNAS on Connect-4 (UCI / OpenML 40668), the embedded data: a 2-layer search space.

Data: shipped with the package (``data.name="connect4"``, 67,557 rows, 42 categorical features
in {0, 1, 2} fed as standardised numbers, 3 classes); split 80% training / 20% validation (App. B.2).
The paper feeds a 2-dimensional learned embedding per feature (84 inputs); this library has no
embedding layer.
Run: ``jaxnas search configs/tabnas_connect4.py`` (120 x 54,045 // 32 = 202,668 steps: long on a
CPU; ``search.steps=...`` for less; bench/tabnas_connect4.py runs a reduced
version and checks the result against stand-alone training).
The paper gives no Connect-4 search space or reference: it says FFNs under 5,000 parameters reach
near-SOTA accuracy and both rewards find the Pareto-optimal references. The 2 layers and the budget of
5,000 parameters here are our choice.

Search space (App. B.2): every hidden layer picks its width from the 20 sizes {8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 384, 512}; 2 hidden layers (our choice)
Weight training (Table 2): batch 32, Adam, lr 0.0005 (cosine decay), 60 stand-alone epochs;
the search runs 120 epochs (2x stand-alone, as the paper's 120-epoch Criteo search), i.e.
``search.steps`` = 120 * 54,045 training rows // 32 = 202,668 steps; with your own
row count set ``search.steps`` to ``epochs * rows // batch`` (the engine gives the strategy its step count).
TabNAS (Alg. 1-3): rejection-based REINFORCE with a Monte-Carlo P̂(V) of N = 4,096 samples, RL lr 0.005,
layer warm-up over the first 25% of the steps, Q = 1 - loss (``q_offset=1``).
Budget: 5,000 parameters (our choice, see above).
Abs Reward baseline (TuNAS): replace the ``strategy`` dict by
``{"name": "tunas_abs", "target": 5000, "beta": -1.0, "lr": 0.005, "q_offset": 1.0}`` (beta not given for Connect-4).

Differences from the paper: the paper's Adam has eps 1e-3 (the engine's optimizer uses optax's default)
and every layer has layer normalisation (the MLP supernet has none); numeric features are standardised
with training statistics (``data.standardize``).
"""


def get_config():
    n_train, batch, search_epochs = 54045, 32, 120
    steps = search_epochs * n_train // batch
    return {
        "seed": 0,
        "data": {"name": "connect4", "val_fraction": 0.2},
        "space": {"name": "mlp", "num_layers": 2},
        "strategy": {"name": "tabnas", "budget": 5000, "pv": "mc", "num_mc_samples": 4096,
                     "lr": 0.005, "warmup_frac": 0.25, "q_offset": 1.0},
        "optimizer": {"name": "adam", "lr": 0.0005, "schedule": "cosine"},
        "search": {"steps": steps, "batch_size": batch, "chunk": 500, "checkpoint_every": 50000},
    }
