"""MA2ML vs MA2ML on-policy vs MA2ML-Lite vs random (and, on request, single-agent REINFORCE) on the
synthetic pipeline game (jaxnas/benchmarks/pipeline_game.py: AUG x NAS x HPO, 331,776 pipelines,
known optimum), with MA2ML's defaults chosen on game instances that the report does not use.

Game instances: instance g is ``PipelineGame.create(None, seed=g)`` (the NAS agent's accuracy a fixed
random function of the cell, additive + pairwise edge effects, drawn with seed g; the AUG/HPO
responses are the game's); ``table`` is the instance with the NAS-Bench-201 12-epoch accuracies (the
instance the earlier defaults were tuned on, so it is in neither set below). A run is one (instance,
seed) pair; run (g, k) uses the key ``fold_in(key(k), g)`` for every method and every tuning
configuration, so the methods' runs are paired.

Every method evaluates P pipelines per round (P lanes, ``jax.vmap(axis_name="data")`` as the search
loop's lanes) for T rounds; all runs of a method go in one compiled program (``vmap`` over runs).
Reported per method and number of evaluated pipelines n (rewards as a fraction of the run's instance
optimum; mean and s.e. with ddof = 1 over the runs): the best reward so far and the mean reward of the
top-k distinct pipelines so far (the poster's "average reward of top-k pipelines"), the rounds needed
to reach 97% / 99% of the optimum, each run's final values (``per_seed``) and the paired differences
between methods (``paired_differences``, mean +- s.e. with ddof = 1 over the paired runs).

    # choose kl_weight (lambda of the poster's J = E_pi[Q - lambda KL(pi || rho)]) and the critic
    # (Q of the counterfactual baseline b(A_-i) = E_{a_i ~ pi_i} Q(a_i, A_-i)) on the tuning
    # instances, then report on the disjoint reporting instances with the chosen values:
    python bench/ma2ml_synthetic.py --tune [--tune-instances 0:16] [--report-instances 1000:1020]
    # report only (MA2ML with its current defaults, or --ma2ml '{"kl_weight": ...}'):
    python bench/ma2ml_synthetic.py [--report-instances 1000:1020] [--seeds 1] [--rounds 40] [--lanes 8]

Writes bench/results/ma2ml_synthetic.json (the tuning grid's results under ``tuning``; a finished grid
point is kept and skipped when the same command runs again) and .png; prints the summary last.
"""
from __future__ import annotations

import argparse
import itertools
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
from jaxnas.strategies.ma2ml import make_ma2ml  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nasbench201" / "nb201_accuracies.csv.gz"
# the tuning grid (small: it ran on a shared CPU core): lambda x the critic (width, Adam steps per
# round, Adam learning rate): ma2ml.py's earlier critic (16 units, 20 steps, 3e-3) and a larger one
# fitted longer (64 units, 60 steps)
KL_WEIGHTS = (0.5, 2.0, 8.0)
CRITICS = ({"critic_hidden": 16, "critic_steps": 20, "critic_lr": 3e-3},
           {"critic_hidden": 64, "critic_steps": 60, "critic_lr": 3e-3})
TUNED = ("kl_weight", "critic_hidden", "critic_steps", "critic_lr")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ma2ml_defaults() -> dict:
    import inspect
    p = inspect.signature(make_ma2ml).parameters
    return {k: p[k].default for k in TUNED}


def parse_instances(spec: str) -> list:
    """'a:b' (game seeds a..b-1), 'a,b,c', or 'table'."""
    if spec == "table":
        return ["table"]
    if ":" in spec:
        a, b = spec.split(":")
        return list(range(int(a), int(b)))
    return [int(x) for x in spec.split(",")]


class Instances:
    """The games of a list of instances, stacked: acc/size float[G, 4096], optimum float[G]."""

    def __init__(self, instances, table):
        self.ids = list(instances)
        games = [PipelineGame.create(table if g == "table" else None, seed=0 if g == "table" else int(g))
                 for g in self.ids]
        if any(g == "table" for g in self.ids) and "table" not in games[self.ids.index("table")].source:
            raise SystemExit(f"instance 'table' needs the NAS-Bench-201 table at {table}")
        self.game = games[0]
        self.acc = np.stack([g.acc for g in games])
        self.size = np.stack([g.size for g in games])
        opts = [g.optimum() for g in games]
        self.optimum = np.array([o for o, _ in opts])
        self.optimum_pipeline = [g.space.encode(a) for g, (_, a) in zip(games, opts)]
        self.sources = [g.source for g in games]


def methods(lr, ma2ml_opts, space):
    return {
        "ma2ml": (space, dict(name="ma2ml", lr=lr, **ma2ml_opts)),
        "ma2ml_on_policy": (space, dict(name="ma2ml", lr=lr, **{**ma2ml_opts, "on_policy": True})),
        "ma2ml_lite": (space, dict(name="ma2ml_lite", lr=lr)),
        "random": (space, dict(name="random")),
        "reinforce_joint": (joint_space(space), dict(name="reinforce", lr=lr)),   # slow: --only
    }


def run_method(inst: Instances, space, cfg, runs, rounds, lanes):
    """rewards float[N, T, P] and pipelines int[N, T, P, D] (product-space indices) of the runs
    ``[(instance index, seed)]``."""
    game = inst.game
    cfg = dict(cfg)
    s = make(cfg.pop("name"), space, axis_name="data", total_steps=rounds, **cfg)
    prod = game.space
    joint = space is not prod
    radix = jnp.asarray([int(np.prod(prod.num_choices[d + 1:])) for d in range(prod.num_decisions)], jnp.int32)
    nch = jnp.asarray(prod.num_choices, jnp.int32)

    def to_prod(a):                   # joint id -> product arch (mixed radix)
        return ((a[0] // radix) % nch).astype(jnp.int32) if joint else a

    def logits(st):
        return st.logits if hasattr(st, "logits") else space.uniform_logits()

    def one_run(key, acc, size):
        def reward_fn(w):
            a = to_prod(jnp.argmax(w, -1).astype(jnp.int32))
            return game.reward(a, acc, size), None
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
    gi = np.array([g for g, _ in runs])
    keys = jax.vmap(lambda k, g: jax.random.fold_in(jax.random.key(k), g))(
        jnp.asarray([k for _, k in runs]), jnp.asarray([hash_instance(inst.ids[g]) for g in gi]))
    acc, size = jnp.asarray(inst.acc[gi]), jnp.asarray(inst.size[gi])
    r, a = jax.jit(jax.vmap(one_run))(keys, acc, size)
    r, a = np.asarray(r), np.asarray(a)
    check = np.asarray(jax.jit(jax.vmap(lambda x, ac, sz: game.reward(x, ac, sz)))(
        a.reshape(len(runs), -1, prod.num_decisions), acc, size))
    np.testing.assert_allclose(check.reshape(-1), r.reshape(-1), rtol=1e-6)  # the recorded pipelines are the evaluated ones
    return r, a


def hash_instance(g) -> int:
    return 10 ** 6 if g == "table" else int(g)


def curves(r, a, space, topk, opt):
    """best-so-far and top-k distinct mean after each round, as fractions of each run's optimum
    ``opt float[N]``: [N, T]."""
    N, T, P = r.shape
    ids = (a * np.array([int(np.prod(space.num_choices[d + 1:])) for d in range(space.num_decisions)])).sum(-1)
    best = np.maximum.accumulate(r.max(2), 1)
    top = np.zeros((N, T))
    for s in range(N):
        seen = {}
        for t in range(T):
            for p in range(P):
                seen[int(ids[s, t, p])] = float(r[s, t, p])
            v = np.sort(np.fromiter(seen.values(), float))[::-1][:topk]
            top[s, t] = v.mean() if len(v) >= topk else np.nan
    return best / opt[:, None], top / opt[:, None]


def mean_se(x):
    x = np.asarray(x, np.float64)
    return float(np.mean(x)), (float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan"))


def se0(x):
    """s.e. (ddof = 1) over axis 0, NaN-aware."""
    n = np.sum(np.isfinite(x), 0)
    return np.nanstd(x, 0, ddof=1) / np.sqrt(np.maximum(n, 1))


def evaluate(inst, space, cfg, runs, args):
    t0 = time.perf_counter()
    r, a = run_method(inst, space, cfg, runs, args.rounds, args.lanes)
    secs = time.perf_counter() - t0
    opt = inst.optimum[[g for g, _ in runs]]
    best, top = curves(r, a, inst.game.space, args.topk, opt)
    return r / opt[:, None, None], best, top, secs


def row(cfg, runs, inst, rn, best, top, secs, args):
    evaluated = (np.arange(args.rounds) + 1) * args.lanes
    reach = {}
    for thr in (0.97, 0.99):
        hit = best >= thr
        first = np.where(hit.any(1), hit.argmax(1) + 1, np.inf)
        reach[f"rounds_to_{thr}"] = {"median": float(np.median(first)), "fraction_reached": float(np.isfinite(first).mean())}
    return {"config": cfg, "seconds": round(secs, 1), "seeds": len(runs), "evaluated": evaluated.tolist(),
            "best_mean": best.mean(0).round(5).tolist(), "best_se": se0(best).round(5).tolist(),
            "topk_mean": np.nanmean(top, 0).round(5).tolist(), "topk_se": se0(top).round(5).tolist(),
            "round_mean_reward": rn.mean((0, 2)).round(5).tolist(),
            "final_best": float(best[:, -1].mean()), "final_topk": float(np.nanmean(top[:, -1])),
            "found_optimum": float(np.mean(best[:, -1] >= 1 - 1e-6)), **reach,
            "per_seed": {"instance": [inst.ids[g] for g, _ in runs], "seed": [k for _, k in runs],
                         "final_best": best[:, -1].round(6).tolist(), "final_topk": top[:, -1].round(6).tolist(),
                         "mean_best_over_rounds": best.mean(1).round(6).tolist(),
                         "mean_reward": rn.mean((1, 2)).round(6).tolist()}}


def paired(rows: dict, pairs) -> dict:
    out = {}
    for a, b in pairs:
        if a not in rows or b not in rows:
            continue
        pa, pb = rows[a]["per_seed"], rows[b]["per_seed"]
        assert pa["instance"] == pb["instance"] and pa["seed"] == pb["seed"], "runs are not paired"
        res = {}
        for key in ("final_best", "final_topk", "mean_best_over_rounds", "mean_reward"):
            d = np.asarray(pa[key]) - np.asarray(pb[key])
            m, se = mean_se(d)
            res[key] = {"mean": m, "se": se, "n": int(len(d)), "wins": int(np.sum(d > 0)), "ties": int(np.sum(d == 0)),
                        "losses": int(np.sum(d < 0))}
        out[f"{a} - {b}"] = res
    return out


def tune(args, out, old):
    inst = Instances(parse_instances(args.tune_instances), args.table)
    runs = [(g, k) for g in range(len(inst.ids)) for k in range(args.seeds)]
    protocol = {"instances": inst.ids, "seeds": args.seeds, "rounds": args.rounds, "lanes": args.lanes,
                "lr": args.lr, "topk": args.topk}
    prev = old.get("tuning", {})
    done = {json.dumps(p["options"], sort_keys=True): p for p in prev.get("grid", [])} \
        if prev.get("protocol") == protocol else {}
    grid = ([{"kl_weight": kl, **c} for kl, c in itertools.product(KL_WEIGHTS, CRITICS)] if args.grid is None
            else [{**ma2ml_defaults(), **g} for g in json.loads(args.grid)])
    defaults = ma2ml_defaults()
    if not any(g == defaults for g in grid):
        grid.insert(0, defaults)
    tuning = {"protocol": protocol, "criterion": "final_best (mean over the tuning runs)",
              "defaults_before": defaults, "grid": []}
    out["tuning"] = tuning
    for opts in grid:
        k = json.dumps(opts, sort_keys=True)
        if k in done:
            tuning["grid"].append(done[k])
            log(f"tune {opts}: done before, final best {done[k]['final_best']:.4f}")
            continue
        cfg = dict(name="ma2ml", lr=args.lr, **opts)
        rn, best, top, secs = evaluate(inst, inst.game.space, cfg, runs, args)
        p = {"options": opts, "seconds": round(secs, 1), "final_best": float(best[:, -1].mean()),
             "final_best_se": mean_se(best[:, -1])[1], "final_topk": float(np.nanmean(top[:, -1])),
             "per_seed_final_best": best[:, -1].round(6).tolist(),
             "per_seed_mean_best_over_rounds": best.mean(1).round(6).tolist()}
        tuning["grid"].append(p)
        log(f"tune {opts}: {secs:.0f}s final best {p['final_best']:.4f} +- {p['final_best_se']:.4f} "
            f"top-k {p['final_topk']:.4f}")
        write(out, args)                                        # each grid point lands at once
    base = next(p for p in tuning["grid"] if p["options"] == defaults)
    for p in tuning["grid"]:
        d = np.asarray(p["per_seed_final_best"]) - np.asarray(base["per_seed_final_best"])
        p["minus_defaults_before"] = dict(zip(("mean", "se"), mean_se(d)))
    chosen = max(tuning["grid"], key=lambda p: p["final_best"])
    tuning["chosen"] = chosen["options"]
    log(f"chosen on the tuning instances: {chosen['options']} (final best {chosen['final_best']:.4f}; "
        f"defaults before {defaults}: {base['final_best']:.4f}; paired difference "
        f"{chosen['minus_defaults_before']['mean']:+.4f} +- {chosen['minus_defaults_before']['se']:.4f})")
    return chosen["options"]


def write(out, args):
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp.json")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, args.out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tune", action="store_true", help="choose kl_weight and the critic on --tune-instances first")
    ap.add_argument("--tune-instances", default="0:16", help="game seeds a:b (b excluded), a,b,c or 'table'")
    ap.add_argument("--report-instances", default="1000:1020")
    ap.add_argument("--grid", default=None, help="JSON list of ma2ml options to tune over (default: the module's grid)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per instance")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--table", default=str(TABLE))
    ap.add_argument("--only", default="ma2ml,ma2ml_on_policy,ma2ml_lite,random",
                    help="comma-separated methods (reinforce_joint: the single agent, ~30 min)")
    ap.add_argument("--ma2ml", default="{}", help="JSON: options of both ma2ml runs (over the tuned/default ones)")
    ap.add_argument("--out", default=str(RESULTS / "ma2ml_synthetic.json"))
    ap.add_argument("--merge", action="store_true", help="keep the other methods' rows of --out")
    args = ap.parse_args()
    tune_ids, report_ids = parse_instances(args.tune_instances), parse_instances(args.report_instances)
    if args.tune and set(map(str, tune_ids)) & set(map(str, report_ids)):
        raise SystemExit(f"tuning and reporting instances overlap: {sorted(set(map(str, tune_ids)) & set(map(str, report_ids)))}")
    old = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cpus, jax {jax.__version__}",
           "command": "python " + " ".join(sys.argv), "methods": {}}
    if args.tune:
        ma2ml_opts = tune(args, out, old)
    else:
        ma2ml_opts = ma2ml_defaults()
        if "tuning" in old:
            out["tuning"] = old["tuning"]
    ma2ml_opts = {**ma2ml_opts, **json.loads(args.ma2ml)}
    inst = Instances(report_ids, args.table)
    runs = [(g, k) for g in range(len(inst.ids)) for k in range(args.seeds)]
    out.update({"game": f"pipeline game, {len(inst.ids)} held-out instances ({inst.sources[0]} ...)",
                "instances": inst.ids, "tuning_instances": tune_ids if args.tune else out.get("tuning", {}).get(
                    "protocol", {}).get("instances"),
                "pipelines": int(inst.game.space.num_archs), "optimum_per_instance": inst.optimum.round(6).tolist(),
                "optimum_pipeline": inst.optimum_pipeline[0], "seeds": len(runs), "seeds_per_instance": args.seeds,
                "rounds": args.rounds, "lanes": args.lanes, "topk": args.topk, "lr": args.lr,
                "ma2ml_options": ma2ml_opts})
    ms = methods(args.lr, ma2ml_opts, inst.game.space)
    ms = {k: v for k, v in ms.items() if k in args.only.split(",")}
    log(f"report on {len(inst.ids)} instances x {args.seeds} seeds; ma2ml options {ma2ml_opts}")
    for name, (space, cfg) in ms.items():
        rn, best, top, secs = evaluate(inst, space, cfg, runs, args)
        out["methods"][name] = m = row(cfg, runs, inst, rn, best, top, secs, args)
        log(f"{name}: {secs:.0f}s final best {m['final_best']:.4f} +- {m['best_se'][-1]:.4f} "
            f"top-{args.topk} {m['final_topk']:.4f} optimum found {m['found_optimum']:.2f} "
            f"rounds to 0.99 {m['rounds_to_0.99']}")
    if args.merge and old.get("instances") == out["instances"] and old.get("seeds") == out["seeds"]:
        for k, v in old.get("methods", {}).items():
            out["methods"].setdefault(k, v)
    out["paired_differences"] = paired(out["methods"], [("ma2ml", "ma2ml_lite"), ("ma2ml", "ma2ml_on_policy"),
                                                        ("ma2ml_on_policy", "ma2ml_lite"), ("ma2ml", "random"),
                                                        ("ma2ml_lite", "random"), ("ma2ml_on_policy", "random"),
                                                        ("reinforce_joint", "random")])
    write(out, args)
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
        fig.suptitle(f"pipeline game, {len(inst.ids)} held-out instances x {args.seeds} seeds "
                     f"({args.lanes} pipelines per round), mean +- s.e. (ddof=1)")
        fig.tight_layout()
        fig.savefig(Path(args.out).with_suffix(".png"), dpi=90)
    except ImportError:
        log("matplotlib missing: no plot")
    summary = {k: {kk: v[kk] for kk in ("final_best", "final_topk", "found_optimum", "rounds_to_0.99", "seconds")}
               for k, v in out["methods"].items()}
    summary["paired"] = {k: [round(v["final_best"]["mean"], 4), round(v["final_best"]["se"], 4)]
                         for k, v in out["paired_differences"].items()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
