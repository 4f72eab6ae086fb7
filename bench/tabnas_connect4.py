"""TabNAS on Connect-4 checked against stand-alone training of every architecture of a 2-layer space.

1. Stand-alone training (jaxnas.standalone: masked max-width MLPs, vmap over architectures x seeds)
   of all 64 architectures of a 2-layer space with 8 widths per layer (from TabNAS's list), 3 seeds
   each: the loss-vs-parameters front (mean and std of the validation loss over the seeds).
2. Two budgets, each the parameter count of a front architecture. For each, TabNAS (rejection +
   Monte-Carlo P̂(V), via jaxnas.runner.run_search with configs/tabnas_connect4.py and overrides) and
   the TuNAS Abs Reward (``tunas_abs``, two values of beta) search the same space; the found
   architecture is checked: within the budget? its stand-alone loss within 2 std of the best
   architecture within the budget? (std: pooled over all architectures' seeds, as the paper quotes
   one run-to-run std per space; the best architecture's own std is reported too.)
3. Search time as a multiple of one stand-alone training (the x axis of TabNAS Fig. 2/12).

Budgeted for 2 CPU cores (~10-15 min): batch 256, Adam lr 3e-3 with cosine decay, 12 stand-alone
epochs (the paper: batch 32, lr 5e-4, 60 epochs); the search runs 2x the stand-alone epochs, as the
paper's 120-epoch search for 60-epoch retrains. Writes bench/results/tabnas_connect4.json and prints it
as the last line. Run: ``python bench/tabnas_connect4.py`` (``--epochs 2 --seeds 2`` for a smoke run).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxnas.build import load_data  # noqa: E402
from jaxnas.config import load_config  # noqa: E402
from jaxnas.runner import run_search  # noqa: E402
from jaxnas.spaces import MLPSpace  # noqa: E402
from jaxnas.standalone import TrainConfig, make_trainer, pareto_front, train_archs  # noqa: E402

WIDTHS = (8, 16, 24, 32, 48, 64, 80, 96)
TARGET_BUDGETS = (2_500, 5_000)   # the budgets are the front architectures' costs nearest these


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def search_config(budget, strategy: dict, steps: int, batch: int, lr: float, seed: int):
    over = [f"space.widths={list(WIDTHS)}", f"search.steps={steps}", f"search.batch_size={batch}",
            f"optimizer.lr={lr}", "search.chunk=211", f"search.checkpoint_every={211 * 1000}",
            f"seed={seed}"]
    cfg = load_config(ROOT / "configs" / "tabnas_connect4.py", over)
    cfg["strategy"] = dict(strategy)          # total_steps: set by the engine from the schedule
    if cfg["strategy"]["name"] == "tabnas":
        cfg["strategy"]["budget"] = float(budget)
    return cfg


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--search-seeds", type=int, default=1)
    p.add_argument("--betas", type=float, nargs="*", default=[-1.0, -5.0])
    args = p.parse_args(argv)
    t_start = time.time()

    cfg0 = load_config(ROOT / "configs" / "tabnas_connect4.py")
    data = load_data(cfg0)
    space = MLPSpace.create(2, data.num_inputs, data.num_classes, WIDTHS)
    archs = np.asarray(space.all_archs())
    costs = np.asarray(space.param_count(archs))
    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, schedule="cosine",
                       optimizer="adam")
    seeds = tuple(range(args.seeds))
    log(f"stand-alone: {len(archs)} architectures x {len(seeds)} seeds, {args.epochs} epochs")
    sa = train_archs(data, space, archs, seeds, tcfg, member_batch=64,
                     progress=lambda d, n, s: log(f"  {d}/{n} members, {s:.0f} s"))
    mean, std = sa["val_loss"].mean(1), sa["val_loss"].std(1, ddof=1)
    pooled_std = float(np.sqrt(np.mean(sa["val_loss"].var(1, ddof=1))))
    front = pareto_front(costs, mean)

    # one stand-alone training on its own (the unit of the paper's time axis): compile, then time
    tr = make_trainer(data.x_train, data.y_train, data.x_val, data.y_val, space.max_widths,
                      space.num_outputs, data.num_classes, tcfg)
    one = (jnp.asarray(np.asarray(space.arch_widths(archs[-1:])), jnp.int32), jax.vmap(jax.random.key)(jnp.arange(1)))
    t0 = time.perf_counter()
    jax.block_until_ready(tr(*one))
    one_with_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(tr(*one))
    one_seconds = time.perf_counter() - t0

    table = [dict(arch=space.encode(a), params=int(c), val_loss_mean=float(m), val_loss_std=float(s),
                  val_balanced_error_mean=float(be), val_accuracy_mean=float(acc))
             for a, c, m, s, be, acc in zip(archs, costs, mean, std, sa["val_balanced_error"].mean(1),
                                            sa["val_accuracy"].mean(1))]
    res = dict(
        space=dict(num_layers=2, widths=WIDTHS, num_inputs=data.num_inputs, num_outputs=data.num_classes,
                   num_archs=len(archs)),
        standalone=dict(epochs=args.epochs, batch_size=args.batch, lr=args.lr, schedule="cosine",
                        optimizer="adam(eps=1e-3)", seeds=len(seeds), steps=sa["total_steps"],
                        seconds_all=round(sa["seconds"], 1), pooled_std=pooled_std,
                        one_training_seconds=round(one_seconds, 2),
                        one_training_seconds_with_compile=round(one_with_compile, 2)),
        front=[table[i] for i in front], table=table, budgets=[])
    log(f"front: {[(table[i]['arch'], table[i]['params'], round(table[i]['val_loss_mean'], 4)) for i in front]}")

    search_epochs = 2 * args.epochs
    steps = search_epochs * (data.num_train // args.batch)
    front_costs = costs[front]
    for target in TARGET_BUDGETS:
        budget = float(front_costs[np.argmin(np.abs(front_costs - target))])
        within = np.flatnonzero(costs <= budget)
        best = within[np.argmin(mean[within])]
        entry = dict(budget=int(budget), num_feasible=int(len(within)), best=table[best],
                     threshold_2std=float(mean[best] + 2 * pooled_std), searches=[])
        methods = [("tabnas", {"name": "tabnas", "pv": "mc", "num_mc_samples": 4096, "lr": 0.005,
                               "warmup_frac": 0.25, "q_offset": 1.0})]
        methods += [(f"tunas_abs(beta={b:g})", {"name": "tunas_abs", "target": budget, "beta": b,
                                                 "lr": 0.005, "warmup_frac": 0.25, "q_offset": 1.0})
                    for b in args.betas]
        for label, strat in methods:
            for s in range(args.search_seeds):
                cfg = search_config(budget, strat, steps, args.batch, args.lr, seed=s)
                with tempfile.TemporaryDirectory() as wd:
                    r = run_search(cfg, wd, progress=None)
                a = space.decode(r["arch"])
                i = int(np.flatnonzero(np.all(archs == a, -1))[0])
                found = dict(method=label, seed=s, arch=r["arch"], params=int(costs[i]),
                             within_budget=bool(costs[i] <= budget),
                             standalone_val_loss_mean=float(mean[i]), standalone_val_loss_std=float(std[i]),
                             gap_to_best=float(mean[i] - mean[best]),
                             within_2std_of_best=bool(costs[i] <= budget and mean[i] <= mean[best] + 2 * pooled_std),
                             is_best=bool(i == best), supernet_val_loss=r["val_loss"],
                             search_steps=steps, search_epochs=search_epochs,
                             search_seconds=round(r["search_seconds"], 1),
                             search_time_in_standalone_trainings=round(r["search_seconds"] / one_with_compile, 2))
                entry["searches"].append(found)
                log(f"budget {int(budget)} {label} seed {s}: {found['arch']} ({found['params']} params) "
                    f"loss {found['standalone_val_loss_mean']:.4f} vs best {table[best]['arch']} "
                    f"{mean[best]:.4f} +- {pooled_std:.4f}; within budget {found['within_budget']}, "
                    f"within 2 std {found['within_2std_of_best']}; {found['search_seconds']} s")
        res["budgets"].append(entry)
    res["seconds"] = round(time.time() - t_start, 1)
    res["note"] = ("search_time_in_standalone_trainings = search wall time (compile included) / one "
                   "stand-alone training of the widest architecture (compile included); the search runs "
                   "2x the stand-alone epochs on one supernet.")
    out = ROOT / "bench" / "results" / "tabnas_connect4.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
