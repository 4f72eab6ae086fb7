"""MA2ML vs MA2ML on-policy vs MA2ML-Lite vs single-agent REINFORCE vs random on the synthetic
pipeline game (jaxnas/benchmarks/pipeline_game.py: AUG x NAS x HPO, 331,776 pipelines, known optimum,
the NAS agent's accuracy from the NAS-Bench-201 table when it is beside the repository).

Every method evaluates P pipelines per round (P lanes, ``jax.vmap(axis_name="data")`` as the search
loop's lanes) for T rounds; all seeds run in one compiled program per method (``vmap`` over seeds).
The single agent is ``reinforce`` over ONE categorical on the 331,776 joint actions (poster, Fig. 1
left); the multi-agent methods use the product space (one categorical per decision, grouped in
agents). Same policy learning rate for every policy method. Reported per method and number of
evaluated pipelines n (averaged over seeds, rewards as a fraction of the optimum): the best reward
so far and the mean reward of the top-k distinct pipelines so far (the poster's "average reward of
top-k pipelines"), plus the rounds each method needs to reach 97% / 99% of the optimum.

    python bench/ma2ml_synthetic.py [--seeds 50] [--rounds 40] [--lanes 8] [--topk 10] [--lr 0.1]

Writes bench/results/ma2ml_synthetic.json and .png; prints the summary as the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jaxnas.benchmarks.pipeline_game import PipelineGame, joint_space  # noqa: E402
from jaxnas.strategies import make  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nasbench201" / "nb201_accuracies.csv.gz"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def methods(game, lr, ma2ml_opts):
    sp = game.space
    return {
        "ma2ml": (sp, dict(name="ma2ml", lr=lr, **ma2ml_opts)),
        "ma2ml_on_policy": (sp, dict(name="ma2ml", lr=lr, **{**ma2ml_opts, "on_policy": True})),
        "ma2ml_lite": (sp, dict(name="ma2ml_lite", lr=lr)),
        "reinforce_joint": (joint_space(sp), dict(name="reinforce", lr=lr)),
        "random": (sp, dict(name="random")),
    }


def run_method(game, space, cfg, seeds, rounds, lanes):
    """rewards float[S, T, P] and pipelines int[S, T, P, D] (product-space indices)."""
    cfg = dict(cfg)
    s = make(cfg.pop("name"), space, axis_name="data", total_steps=rounds, **cfg)
    prod = game.space
    acc, size = jnp.asarray(game.acc), jnp.asarray(game.size)
    joint = space is not prod
    radix = jnp.asarray([int(np.prod(prod.num_choices[d + 1:])) for d in range(prod.num_decisions)], jnp.int32)
    nch = jnp.asarray(prod.num_choices, jnp.int32)

    def to_prod(a):                   # joint id -> product arch (mixed radix)
        return ((a[0] // radix) % nch).astype(jnp.int32) if joint else a

    def reward_fn(w):
        a = to_prod(jnp.argmax(w, -1).astype(jnp.int32))
        return game.reward(a, acc, size), None

    def logits(st):
        return st.logits if hasattr(st, "logits") else space.uniform_logits()

    def one_seed(key):
        k_init, k_run = jax.random.split(key)

        def round_(st, k):
            def lane(kk):
                arch = space.sample(kk, logits(st))          # what step evaluates (same key, first draw)
                new, m = s.step(st, kk, reward_fn)
                return new, m["reward"], to_prod(arch)
            new, r, a = jax.vmap(lane, axis_name="data", out_axes=(None, 0, 0))(jax.random.split(k, lanes))
            return new, (r, a)
        _, (r, a) = jax.lax.scan(round_, s.init(k_init), jax.random.split(k_run, rounds))
        return r, a
    keys = jax.vmap(jax.random.key)(jnp.arange(seeds))
    r, a = jax.jit(jax.vmap(one_seed))(keys)
    r, a = np.asarray(r), np.asarray(a)
    check = np.asarray(jax.jit(lambda x: game.reward(x, acc, size))(a.reshape(-1, prod.num_decisions)))
    np.testing.assert_allclose(check, r.reshape(-1), rtol=1e-6)    # the recorded pipelines are the evaluated ones
    return r, a


def curves(r, a, space, topk, opt):
    """best-so-far and top-k distinct mean after each round, as fractions of the optimum: [S, T]."""
    S, T, P = r.shape
    ids = (a * np.array([int(np.prod(space.num_choices[d + 1:])) for d in range(space.num_decisions)])).sum(-1)
    best = np.maximum.accumulate(r.reshape(S, -1).max(-1, keepdims=True) * 0 + np.maximum.accumulate(
        r.reshape(S, T * P), 1), 1).reshape(S, T, P)[:, :, -1]
    top = np.zeros((S, T))
    for s in range(S):
        seen = {}
        for t in range(T):
            for p in range(P):
                seen[int(ids[s, t, p])] = float(r[s, t, p])
            v = np.sort(np.fromiter(seen.values(), float))[::-1][:topk]
            top[s, t] = v.mean() if len(v) >= topk else np.nan
    return best / opt, top / opt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--table", default=str(TABLE))
    ap.add_argument("--only", default=None, help="comma-separated methods")
    ap.add_argument("--ma2ml", default="{}", help="JSON: options of both ma2ml runs")
    ap.add_argument("--out", default=str(RESULTS / "ma2ml_synthetic.json"))
    ap.add_argument("--merge", action="store_true", help="keep the other methods' rows of --out")
    args = ap.parse_args()
    game = PipelineGame.create(args.table)
    opt, opt_arch = game.optimum()
    all_r = game.all_rewards()
    log(f"game: {game.source}; {game.space.num_archs} pipelines; optimum {opt:.4f} "
        f"({game.space.encode(opt_arch)}); mean {all_r.mean():.4f}")
    out = {"game": game.source, "pipelines": int(game.space.num_archs), "optimum": opt,
           "optimum_pipeline": game.space.encode(opt_arch),
           "reward_quantiles": {q: float(np.quantile(all_r / opt, q)) for q in (0.5, 0.9, 0.99, 0.999)},
           "seeds": args.seeds, "rounds": args.rounds, "lanes": args.lanes, "topk": args.topk, "lr": args.lr,
           "machine": f"{platform.machine()} {os.cpu_count()} cpus, jax {jax.__version__}", "methods": {}}
    ms = methods(game, args.lr, json.loads(args.ma2ml))
    if args.only:
        ms = {k: v for k, v in ms.items() if k in args.only.split(",")}
    evaluated = (np.arange(args.rounds) + 1) * args.lanes
    for name, (space, cfg) in ms.items():
        t0 = time.perf_counter()
        r, a = run_method(game, space, cfg, args.seeds, args.rounds, args.lanes)
        secs = time.perf_counter() - t0
        best, top = curves(r, a, game.space, args.topk, opt)
        reach = {}
        for thr in (0.97, 0.99):
            hit = best >= thr
            first = np.where(hit.any(1), hit.argmax(1) + 1, np.inf)
            reach[f"rounds_to_{thr}"] = {"median": float(np.median(first)),
                                         "fraction_reached": float(np.isfinite(first).mean())}
        out["methods"][name] = {
            "config": cfg, "seconds": round(secs, 1), "seeds": args.seeds,
            "evaluated": evaluated.tolist(),
            "best_mean": best.mean(0).round(5).tolist(), "best_se": (best.std(0) / np.sqrt(len(best))).round(5).tolist(),
            "topk_mean": np.nanmean(top, 0).round(5).tolist(),
            "topk_se": (np.nanstd(top, 0) / np.sqrt(len(top))).round(5).tolist(),
            "round_mean_reward": (r.mean((0, 2)) / opt).round(5).tolist(),
            "final_best": float(best[:, -1].mean()), "final_topk": float(np.nanmean(top[:, -1])),
            "found_optimum": float(np.mean(best[:, -1] >= 1 - 1e-6)), **reach}
        m = out["methods"][name]
        log(f"{name}: {secs:.0f}s final best {m['final_best']:.4f} top-{args.topk} {m['final_topk']:.4f} "
            f"optimum found {m['found_optimum']:.2f} rounds to 0.99 {m['rounds_to_0.99']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.merge and Path(args.out).exists():     # rows of other runs (their seeds/rounds are in each row)
        old = json.loads(Path(args.out).read_text())
        for k, v in old.get("methods", {}).items():
            out["methods"].setdefault(k, v)
    for v in out["methods"].values():
        v.setdefault("seeds", args.seeds)
    Path(args.out).write_text(json.dumps(out, indent=1))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for name, m in out["methods"].items():
            x = np.asarray(m["evaluated"])
            for ax, key in zip(axes[:2], ("best", "topk")):
                mu, se = np.asarray(m[f"{key}_mean"]), np.asarray(m[f"{key}_se"])
                ax.plot(x, mu, label=name)
                ax.fill_between(x, mu - se, mu + se, alpha=0.2)
            axes[2].plot(x, m["round_mean_reward"], label=name)
        axes[0].set_title("best so far / optimum")
        axes[1].set_title(f"mean of top-{args.topk} distinct pipelines / optimum")
        axes[2].set_title("mean reward of the round's pipelines / optimum")
        for ax in axes:
            ax.set_xlabel("evaluated pipelines")
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.suptitle(f"pipeline game ({args.seeds} seeds, {args.lanes} pipelines per round), mean +- s.e.")
        fig.tight_layout()
        fig.savefig(Path(args.out).with_suffix(".png"), dpi=90)
    except ImportError:
        log("matplotlib missing: no plot")
    print(json.dumps({k: {kk: v[kk] for kk in ("final_best", "final_topk", "found_optimum", "rounds_to_0.99",
                                                "seconds")} for k, v in out["methods"].items()}))


if __name__ == "__main__":
    main()
