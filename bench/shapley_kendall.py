"""Shapley-NAS Fig. 2 (sec. 3.2) measured on NAS-Bench-201: does the ranking of the ops on an edge by
their Shapley value follow their stand-alone quality better than the ranking by DARTS's alpha?

1. A DARTS (first-order) search of the tiny NB201 supernet (``configs/shapley_nb201_tiny.py`` with
   the strategy switched to ``darts``: C = 4, 3 cells, the CIFAR-10 subset, half the steps weights
   only) gives the supernet weights and alpha.
2. On that supernet, at its mixing weights softmax(alpha), the Shapley values of the 6 x 5 (edge, op)
   players by Alg. 1 (M = ``--M`` permutations, eta = 0.5, validation accuracy on ``--val-batch``
   images; the zero op is a null player, phi = 0).
3. The stand-alone measure of (edge, op), from the NAS-Bench-201 table: the mean 200-epoch CIFAR-10
   test accuracy of all 3,125 cells that use that op on that edge.
4. Kendall's tau-b per edge (5 ops) between alpha and the stand-alone measure and between phi and it;
   their mean over the 6 edges, per seed. ``--with-shapley-search`` also runs the Shapley-NAS search
   of the same config and reports tau for its final alpha and last phi.

Writes ``bench/results/shapley_kendall.json``.

    python bench/shapley_kendall.py --seeds 0 --steps 300
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from jaxnas.benchmarks.nb201 import NasBench201Table  # noqa: E402
from jaxnas.config.experiment import build  # noqa: E402
from jaxnas.config.settings import raw_config, resolve  # noqa: E402
from jaxnas.strategies import make  # noqa: E402

CONFIG = REPO / "configs" / "shapley_nb201_tiny.py"
TABLE = REPO.parent / "shared" / "data" / "nasbench201" / "nb201_accuracies.csv.gz"
ENTRY = re.compile(r"([A-Za-z0-9_]+)~(\d+)")


def standalone(space, table_path, column="cifar10_test"):
    """float[6, 5]: mean accuracy of the table's cells with op k on edge e (the space's op order)."""
    tab = NasBench201Table.load(table_path)
    sums, counts = np.zeros(space.shape), np.zeros(space.shape)
    for arch, acc in zip(tab.archs, tab.columns[column]):
        ops = [m[0] for m in ENTRY.findall(arch)]
        for e, op in enumerate(ops):
            k = space.ops.index(op)
            sums[e, k] += acc
            counts[e, k] += 1
    return sums / counts


def per_edge_tau(scores, ref):
    taus = [kendalltau(np.asarray(scores)[e], ref[e]).statistic for e in range(ref.shape[0])]
    return [float(t) for t in taus]


def search(cfg_overrides, strategy, steps, warmup, seed):
    cfg = raw_config(CONFIG)
    cfg["strategy"] = strategy
    cfg = resolve(cfg, cfg_overrides + [f"search.steps={steps}", f"search.warmup_steps={warmup}",
                                        f"seed={seed}"])
    exp = build(cfg)
    s, data = exp.search, exp.data
    state = s.init(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    B, VB, chunk = cfg["search"]["batch_size"], cfg["search"]["val_batch_size"], cfg["search"]["chunk"]
    for phase in exp.phases:
        done = 0
        while done < phase.steps:
            n = min(chunk, phase.steps - done)
            ti = rng.integers(0, len(data.y_train), (n, B))
            vi = rng.integers(0, len(data.y_val), (n, VB))
            state, _ = s.run_chunk(state, (data.x_train[ti], data.y_train[ti]),
                                   (data.x_val[vi], data.y_val[vi]), kind=phase.kind)
            done += n
    return exp, jax.device_get(state)


def shapley_on(exp, evstate, alpha, M, val_batch, seed):
    space, ev, data = exp.space, exp.evaluator, exp.data
    s = make("shapley", space, num_samples=M, eta=0.5, total_steps=1)
    st = s.init(jax.random.key(0)).replace(alpha=jnp.asarray(alpha))
    vb = (jnp.asarray(data.x_val[:val_batch]), jnp.asarray(data.y_val[:val_batch]))
    # the supernet state and batch as arguments (closed-over arrays would be constant-folded)
    st, m = jax.jit(lambda st, es, b: s.step(st, jax.random.key(seed), ev.batched_reward_fn(es, (), b, None)))(
        st, evstate, vb)
    return np.asarray(st.phi), {k: float(v) for k, v in m.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--M", type=int, default=20)
    p.add_argument("--val-batch", type=int, default=500)
    p.add_argument("--with-shapley-search", action="store_true")
    p.add_argument("--table", default=str(TABLE))
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "shapley_kendall.json"))
    args = p.parse_args()
    runs = []
    for seed in [int(x) for x in args.seeds.split(",")]:
        t0 = time.perf_counter()
        # DARTS differentiates the reward: minus the validation loss (accuracy has no gradient)
        exp, state = search(["search.reward=neg_loss"], {"name": "darts"}, args.steps, args.warmup, seed)
        ref = standalone(exp.space, args.table)
        alpha = np.asarray(state.strategy.alpha)
        phi, m = shapley_on(exp, state.evaluator, alpha, args.M, args.val_batch, seed)
        run = {"seed": seed, "ops": list(exp.space.ops),
               "standalone_mean_acc": ref.round(3).tolist(),
               "darts": {"alpha": alpha.round(4).tolist(), "tau_alpha": per_edge_tau(alpha, ref),
                         "phi": phi.round(5).tolist(), "tau_phi": per_edge_tau(phi, ref),
                         "V_N": m["reward"], "evaluations": m["evaluations"],
                         "derived": exp.space.encode(np.asarray(exp.strategy.derive(state.strategy)))}}
        run["darts"]["mean_tau_alpha"] = float(np.nanmean(run["darts"]["tau_alpha"]))
        run["darts"]["mean_tau_phi"] = float(np.nanmean(run["darts"]["tau_phi"]))
        if args.with_shapley_search:
            exp2, st2 = search([], {"name": "shapley"}, args.steps, args.warmup, seed)
            a2, phi2 = np.asarray(st2.strategy.alpha), np.asarray(st2.strategy.phi)
            run["shapley_search"] = {"alpha": a2.round(4).tolist(), "phi_last": phi2.round(5).tolist(),
                                     "tau_alpha": per_edge_tau(a2, ref), "tau_phi_last": per_edge_tau(phi2, ref),
                                     "derived": exp2.space.encode(np.asarray(exp2.strategy.derive(st2.strategy)))}
            run["shapley_search"]["mean_tau_alpha"] = float(np.nanmean(run["shapley_search"]["tau_alpha"]))
            run["shapley_search"]["mean_tau_phi_last"] = float(np.nanmean(run["shapley_search"]["tau_phi_last"]))
        run["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(run), flush=True)
        runs.append(run)
    out = {"config": str(CONFIG.relative_to(REPO)), "steps": args.steps, "warmup": args.warmup,
           "M": args.M, "eta": 0.5, "val_batch": args.val_batch, "table_column": "cifar10_test",
           "runs": runs,
           "mean_tau_alpha_darts": float(np.mean([r["darts"]["mean_tau_alpha"] for r in runs])),
           "mean_tau_phi_on_darts_supernet": float(np.mean([r["darts"]["mean_tau_phi"] for r in runs])),
           "command": " ".join(["python", "bench/shapley_kendall.py"] + sys.argv[1:])}
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
