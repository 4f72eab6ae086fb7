"""MA2ML vs MA2ML on-policy vs MA2ML-Lite vs random on real pipelines: the embedded 8x8 digits of
configs/ma2ml_digits.py (AUG 2 sub-policies x NB201 cell C = 8, one cell per stage x HPO grids
lr x weight decay x label smoothing; every pipeline trained from scratch, reward = validation accuracy
on the 540 held-out images).

Each method evaluates P pipelines per round (the evaluator's lanes, one compiled program) for T
rounds, for every seed. Seeds are paired: method m with seed k uses round keys
``fold_in(key(1000 + k), r)`` and the strategy init key ``key(k)`` whatever the method, so the
training noise of lane p in round r is the same for every method (common random numbers) and the
per-seed differences between methods are paired.

    python bench/ma2ml_digits.py [--seeds 5] [--rounds 20] [--lanes 8] [--steps 150] [--chunk-rounds 1] [--only-seeds 0,2,4]
                                 [--methods ma2ml,ma2ml_lite,ma2ml_on_policy,random]

Defaults are the full size the issue asks for (5 seeds x 160 pipelines per method, 150 SGD steps of
batch 64 per pipeline, the config's). Resumable: a finished (method, seed) unit is stored in the JSON
(its per-round rewards and pipelines) and skipped by the next run with the same protocol (lanes,
steps, data split); an unfinished unit saves its strategy state (replay buffer and critic included)
after every ``--chunk-rounds`` rounds to ``bench/work/ma2ml_digits/`` and goes on from there. A run with
more ``--rounds`` than a stored unit extends it from its saved state. Writes
bench/results/ma2ml_digits.json (per method: per-seed best-so-far curves, round-mean rewards, final
best validation accuracy with mean +- s.e. (ddof = 1) over the seeds, and the paired difference to
random per seed with its mean +- s.e.) and .png; prints the summary as the last line.
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
from ma2ml_cifar_tiny import pipeline_round  # noqa: E402  (the same round as the CIFAR bench)
from nb201_oneshot import update  # noqa: E402  (the results file under a lock)

from jaxnas.config.experiment import build_space, load_data  # noqa: E402
from jaxnas.config.settings import raw_config, resolve  # noqa: E402
from jaxnas.engine import compile_cache  # noqa: E402
from jaxnas.evaluators.standalone import make as make_standalone  # noqa: E402
from jaxnas.strategies import make  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "jaxnas" / "configs" / "ma2ml_digits.py"
OUT = REPO / "bench" / "results" / "ma2ml_digits.json"
WORK = REPO / "bench" / "work" / "ma2ml_digits"
# every policy method with the same policy learning rate (the config's); ma2ml's other options are
# the strategy's defaults (bench/ma2ml_synthetic.py --tune chose them on held-out game instances)
METHODS = {"random": ("random", {}), "ma2ml": ("ma2ml", {}), "ma2ml_lite": ("ma2ml_lite", {}),
           "ma2ml_on_policy": ("ma2ml", {"on_policy": True})}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def mean_se(x):
    x = np.asarray(x, np.float64)
    se = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
    return float(x.mean()), se


def load_ckpt(path: Path, init_state, protocol):
    if path.exists():
        z = np.load(path)
        if json.loads(str(z["protocol"])) == protocol:
            leaves, treedef = jax.tree.flatten(init_state)
            state = jax.tree.unflatten(treedef, [jnp.asarray(z[f"leaf{i}"], l.dtype) for i, l in enumerate(leaves)])
            return state, z["rewards"], z["archs"], float(z["seconds"])
        log(f"{path}: another protocol, starting the unit afresh")
    return init_state, None, None, 0.0


def save_ckpt(path: Path, state, rewards, archs, seconds, protocol):
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = {f"leaf{i}": np.asarray(l) for i, l in enumerate(jax.tree.leaves(state))}
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, rewards=rewards, archs=archs, seconds=seconds, protocol=json.dumps(protocol), **leaves)
    os.replace(tmp, path)


def summarise(out, seeds, rounds):
    """Per method: curves and stats over the seeds 0..seeds-1 that are done (first ``rounds`` rounds)."""
    units = out["units"]
    summary = {}
    common = None
    for name in out["methods_run"]:
        done = [k for k in range(seeds) if f"{name}/seed{k}" in units and len(units[f"{name}/seed{k}"]["rewards"]) >= rounds]
        common = set(done) if common is None else common & set(done)
    common = sorted(common or [])
    for name in out["methods_run"]:
        if not common:
            break
        r = np.stack([np.asarray(units[f"{name}/seed{k}"]["rewards"], np.float64)[:rounds] for k in common])  # [S, T, P]
        best = np.maximum.accumulate(r.max(2), 1)                   # [S, T]
        fb = best[:, -1]
        m, se = mean_se(fb)
        summary[name] = {
            "seeds": common, "evaluated": ((np.arange(rounds) + 1) * r.shape[2]).tolist(),
            "best_so_far_per_seed": best.round(5).tolist(),
            "best_so_far_mean": best.mean(0).round(5).tolist(),
            "best_so_far_se": (best.std(0, ddof=1) / np.sqrt(len(best))).round(5).tolist() if len(best) > 1 else None,
            "round_mean_reward_per_seed": r.mean(2).round(5).tolist(),
            "round_mean_reward": r.mean((0, 2)).round(5).tolist(),
            "round_mean_reward_se": (r.mean(2).std(0, ddof=1) / np.sqrt(len(r))).round(5).tolist() if len(r) > 1 else None,
            "final_best_per_seed": fb.round(5).tolist(), "final_best_mean": m, "final_best_se": se,
            "mean_reward_all_rounds": mean_se(r.mean((1, 2))),
            "seconds": round(sum(units[f"{name}/seed{k}"]["seconds"] for k in common), 1)}
    if "random" in summary:
        fr = np.asarray(summary["random"]["final_best_per_seed"])
        rr = np.asarray(summary["random"]["round_mean_reward_per_seed"]).mean(1)
        for name, s in summary.items():
            if name == "random":
                continue
            d = np.asarray(s["final_best_per_seed"]) - fr
            dm = np.asarray(s["round_mean_reward_per_seed"]).mean(1) - rr
            s["final_best_minus_random"] = {"per_seed": d.round(5).tolist(), "mean_se": mean_se(d)}
            s["mean_reward_minus_random"] = {"per_seed": dm.round(5).tolist(), "mean_se": mean_se(dm)}
    return summary


def plot(out, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, m in out["methods"].items():
        x = np.asarray(m["evaluated"])
        for ax, key in zip(axes, ("best_so_far", "round_mean_reward")):
            mu = np.asarray(m[f"{key}_mean"] if key == "best_so_far" else m[key])
            se = m[f"{key}_se"]
            ax.plot(x, mu, label=name)
            if se is not None:
                ax.fill_between(x, mu - np.asarray(se), mu + np.asarray(se), alpha=0.2)
    axes[0].set_title("best validation accuracy so far")
    axes[1].set_title("mean validation accuracy of the round's pipelines")
    for ax in axes:
        ax.set_xlabel("evaluated pipelines")
        ax.grid(alpha=0.3)
    axes[0].legend()
    n = len(next(iter(out["methods"].values()))["seeds"]) if out["methods"] else 0
    fig.suptitle(f"MA2ML on digits ({n} paired seeds, {out['lanes']} pipelines per round, "
                 f"{out['steps_per_pipeline']} steps each), mean +- s.e. (ddof=1)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None, help="SGD steps per pipeline (default: the config's 150)")
    ap.add_argument("--chunk-rounds", type=int, default=1, help="rounds per compiled call (and per checkpoint)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--work", default=str(WORK), help="folder of the unfinished units' checkpoints")
    ap.add_argument("--note", default=None, help="a note stored in the JSON (e.g. why the size is reduced)")
    ap.add_argument("--only-seeds", default=None,
                    help="comma-separated seeds this process runs (others in another process: the results "
                         "file is locked, units merge)")
    ap.add_argument("--time-only", action="store_true", help="time one round of every method, write nothing")
    args = ap.parse_args()
    compile_cache.ensure()
    cfg = resolve(raw_config(CONFIG))
    if args.steps is not None:
        cfg["evaluator"]["max_steps"] = int(args.steps)
    data = load_data(cfg)
    space = build_space(cfg, data)
    ev_opts = {k: v for k, v in cfg["evaluator"].items() if k != "name"}
    ev = make_standalone(ev_opts, cfg=cfg, space=space, data=data)
    inputs = ev.inputs()
    lr = cfg["strategy"].get("lr", 0.1)
    protocol = {"lanes": args.lanes, "steps_per_pipeline": ev.cfg.steps, "batch_size": ev.cfg.batch_size,
                "split_seed": cfg["seed"], "val_fraction": cfg["data"]["val_fraction"], "lr": lr}
    out_path = Path(args.out)
    old = json.loads(out_path.read_text()) if out_path.exists() else {}
    units = old.get("units", {}) if old.get("protocol") == protocol else {}
    if old and old.get("protocol") != protocol and not args.time_only:
        log(f"{out_path}: stored units have protocol {old.get('protocol')}, not {protocol}: not reused")
    chosen = [m for m in args.methods.split(",") if m]
    for name in chosen:
        if name not in METHODS:
            raise SystemExit(f"unknown method {name!r}; one of {list(METHODS)}")
    out = {"config": "configs/ma2ml_digits.py", "protocol": protocol, "seeds": args.seeds, "rounds": args.rounds,
           "lanes": args.lanes, "steps_per_pipeline": ev.cfg.steps, "lr": lr,
           "train_images": int(len(data.y_train)), "val_images": int(len(data.y_val)),
           "machine": f"{platform.machine()} {os.cpu_count()} cpus, jax {jax.__version__}",
           "methods_run": sorted(set(chosen) | set(old.get("methods_run", [])) if units else chosen,
                                 key=list(METHODS).index),
           "note": args.note, "units": units, "methods": {}}

    def write():
        def merge(stored):   # units another process (--only-seeds) wrote meanwhile are kept
            if stored.get("protocol") == protocol:
                units.update({k: v for k, v in stored.get("units", {}).items() if k not in units})
                out["methods_run"] = sorted(set(out["methods_run"]) | set(stored.get("methods_run", [])),
                                            key=list(METHODS).index)
            out["methods"] = summarise(out, args.seeds, args.rounds)
            return json.loads(json.dumps(out, default=float))
        update(out_path, merge)

    strategies = {}
    for name in chosen:
        sname, opts = METHODS[name]
        opts = {**opts} if sname == "random" else {"lr": lr, **opts}
        if sname == "ma2ml":   # the policies move after the first round (as bench/ma2ml_cifar_tiny.py)
            opts["min_buffer"] = min(cfg["strategy"].get("min_buffer", 8), args.lanes)
        # constant learning rates (the defaults): total_steps does not change a round, so units extend
        s = make(sname, space, axis_name="data", total_steps=args.rounds, **opts)
        strategies[name] = (s, jax.jit(lambda st, keys, s=s: jax.lax.scan(pipeline_round(s, space, ev, inputs,
                                                                                          args.lanes), st, keys)))
    # seed-major: every method's unit of seed k lands before seed k + 1 starts, so a partial run
    # already holds paired comparisons
    seeds = sorted(int(s) for s in args.only_seeds.split(",")) if args.only_seeds else range(args.seeds)
    for seed in seeds:
        for name in chosen:
            s, run = strategies[name]
            uid = f"{name}/seed{seed}"
            unit = units.get(uid)
            if unit is not None and len(unit["rewards"]) >= args.rounds:
                continue                                                   # finished: skipped
            ckpt = Path(args.work) / f"{name}_seed{seed}.npz"
            state, r_all, a_all, sec = load_ckpt(ckpt, s.init(jax.random.key(seed)), protocol)
            done = 0 if r_all is None else len(r_all)
            while done < args.rounds:
                n = 1 if args.time_only else min(args.chunk_rounds, args.rounds - done)
                keys = jax.vmap(lambda t: jax.random.fold_in(jax.random.key(1000 + seed), t))(done + jnp.arange(n))
                t0 = time.perf_counter()
                state, (r, a) = run(state, keys)
                r, a = np.asarray(r), np.asarray(a)
                dt = time.perf_counter() - t0
                if args.time_only:
                    t1 = time.perf_counter()
                    run(state, keys)[1][0].block_until_ready()
                    log(f"{name}: first round {dt:.1f}s (compile + run), second {time.perf_counter() - t1:.1f}s "
                        f"({args.lanes} pipelines of {ev.cfg.steps} steps), rewards {np.round(r, 3).tolist()}")
                    break
                sec += dt
                r_all = r if r_all is None else np.concatenate([r_all, r])
                a_all = a if a_all is None else np.concatenate([a_all, a])
                done += n
                save_ckpt(ckpt, state, r_all, a_all, sec, protocol)
                log(f"{uid}: round {done}/{args.rounds} best {np.max(r_all):.4f} ({sec:.0f}s)")
            if args.time_only:
                continue                                                   # one round of each method
            units[uid] = {"rewards": np.round(r_all, 5).tolist(), "archs": a_all.tolist(), "seconds": round(sec, 1)}
            write()                                                        # the unit lands at once
        if args.time_only:
            return
    write()
    plot(out, out_path.with_suffix(".png"))
    print(json.dumps({k: {"final_best": [round(v["final_best_mean"], 4), round(v["final_best_se"], 4)],
                          "minus_random": [round(x, 4) for x in v.get("final_best_minus_random", {}).get("mean_se", [])]}
                      for k, v in out["methods"].items()}))


if __name__ == "__main__":
    main()
