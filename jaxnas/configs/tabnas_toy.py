"""TabNAS Fig. 1 toy: two hidden layers of width {2, 3, 4}, 2 inputs, 1 output, limit 25 parameters.

No supernet: the reward of an architecture is 1 - loss from the table below (TabNAS App. B.1:
Adam b1 0.9, b2 0.999, eps 1e-3; lr 0.1 for the rejection-based reward, >= 0.05 for the Abs Reward).
Parameter counts (weights + biases): rows h1 = 2, 3, 4; columns h2 = 2, 3, 4
    15 19 23
    20 25 30*
    25 31* 37*          (* infeasible: > 25)
The loss table is ours (the paper's Fig. 1 values are not in the text): 4-2 is the best feasible
architecture, the infeasible 3-4, 4-3, 4-4 are better still, and 3-3 (also 25 parameters) is the
runner-up a factorised controller falls into.

Used by bench/tabnas_toy.py and tests/test_tabnas.py. ``get_config()`` returns a plain dict.
"""

LOSS = (
    (0.74, 0.76, 0.72),
    (0.64, 0.66, 0.52),
    (0.46, 0.44, 0.40),
)
BEST_FEASIBLE = "4-2"


def get_config() -> dict:
    return dict(
        space=dict(kind="mlp", num_layers=2, num_inputs=2, num_outputs=1, widths=(2, 3, 4)),
        loss_table=LOSS,
        best=BEST_FEASIBLE,
        budget=25,
        steps=500,
        seeds=200,
        # q_offset 0: the toy's reward_fn already returns Q = 1 - loss (an engine reward is -loss,
        # for which the default q_offset 1 gives the same Q)
        tabnas=dict(budget=25, pv="mc", num_mc_samples=64, lr=0.1, warmup_frac=0.0, q_offset=0.0),
        tabnas_exact=dict(budget=25, pv="exact", lr=0.1, warmup_frac=0.0, q_offset=0.0),
        # baselines: T0 = 25, the grid of beta of App. B.2.3 around the paper's Fig. 1 values (-1, -2)
        tunas_abs=dict(target=25, lr=0.1, warmup_frac=0.0, q_offset=0.0),
        mnas_soft=dict(target=25, lr=0.1, warmup_frac=0.0, q_offset=0.0),
        mnas_hard=dict(target=25, lr=0.1, warmup_frac=0.0, q_offset=0.0),
        betas=(-0.05, -0.1, -0.25, -0.5, -1.0, -2.0, -5.0),
    )
