"""TabNAS Fig. 1 / Fig. 13: the 2-layer toy, rejection-based reward vs reward shaping, 200 seeds each.

For every method (TabNAS with Monte-Carlo P̂(V) and with exact P(V); TuNAS Abs Reward, MnasNet soft and
hard over a grid of beta) the controller runs ``steps`` RL steps on the loss table of
configs/tabnas_toy.py, vmapped over seeds, and the derived architecture (TabNAS: Alg. 3; baselines:
argmax) is classed as the best feasible one (4-2), another feasible one, or infeasible.
Writes bench/results/tabnas_toy.json and prints it as the last line.

Run: ``python bench/tabnas_toy.py`` (about a minute on 2 CPU cores); ``--seeds 50 --steps 300`` for less.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxnas.spaces.mlp import MLPSpace  # noqa: E402
from jaxnas.strategies import make  # noqa: E402
from jaxnas.strategies.budget import make_budget  # noqa: E402


def load_config() -> dict:
    spec = importlib.util.spec_from_file_location("tabnas_toy_config", ROOT / "configs" / "tabnas_toy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def toy_space(cfg) -> MLPSpace:
    s = cfg["space"]
    return MLPSpace.create(s["num_layers"], s["num_inputs"], s["num_outputs"], widths=s["widths"])


def toy_reward_fn(cfg):
    """reward_fn(weights) = 1 - loss[argmax(weights)]: the toy needs no supernet."""
    loss = jnp.asarray(cfg["loss_table"], jnp.float32)

    def reward_fn(weights):
        a = jnp.argmax(weights, -1)
        return 1.0 - loss[a[0], a[1]], None
    return reward_fn


def run_method(name: str, config: dict, cfg: dict, seeds: int, steps: int) -> dict:
    """Runs ``seeds`` independent searches (vmap) of ``steps`` RL steps; returns outcome rates."""
    space = toy_space(cfg)
    strat = make(name, space, **config)
    reward_fn = toy_reward_fn(cfg)
    budget = make_budget(space, cfg["budget"])
    best = space.decode(cfg["best"])

    def one(seed):
        key = jax.random.key(seed)
        state = strat.init(key)

        def body(st, k):
            return strat.step(st, k, reward_fn)
        state, metrics = jax.lax.scan(body, state, jax.random.split(jax.random.fold_in(key, 1), steps))
        return strat.derive(state), metrics

    archs, metrics = jax.jit(jax.vmap(one))(jnp.arange(seeds))
    archs = np.asarray(archs)
    feas = np.asarray(budget.feasible(archs))
    is_best = np.all(archs == best, -1)
    found = {}
    for a in archs:
        k = space.encode(a)
        found[k] = found.get(k, 0) + 1
    out = dict(success_rate=float(is_best.mean()),
               infeasible_rate=float((~feas).mean()),
               worse_feasible_rate=float((feas & ~is_best).mean()),
               found=dict(sorted(found.items(), key=lambda kv: -kv[1])))
    if "pv_exact" in metrics:
        out["final_pv_exact_mean"] = float(np.mean(np.asarray(metrics["pv_exact"])[:, -1]))
    if "skipped_infeasible" in metrics:
        out["skipped_infeasible_mean"] = float(np.mean(np.asarray(metrics["skipped_infeasible"])[:, -1]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    args = p.parse_args(argv)
    cfg = load_config()
    seeds = args.seeds or cfg["seeds"]
    steps = args.steps or cfg["steps"]
    t0 = time.time()
    res = dict(seeds=seeds, steps=steps, budget=cfg["budget"], best=cfg["best"],
               loss_table=cfg["loss_table"], methods={})
    res["methods"]["tabnas_mc"] = run_method("tabnas", cfg["tabnas"], cfg, seeds, steps)
    res["methods"]["tabnas_mc"]["config"] = cfg["tabnas"]
    res["methods"]["tabnas_exact"] = run_method("tabnas", cfg["tabnas_exact"], cfg, seeds, steps)
    res["methods"]["tabnas_exact"]["config"] = cfg["tabnas_exact"]
    for name in ("tunas_abs", "mnas_soft", "mnas_hard"):
        for beta in cfg["betas"]:
            conf = dict(cfg[name], beta=beta)
            r = run_method(name, conf, cfg, seeds, steps)
            r["config"] = conf
            res["methods"][f"{name}(beta={beta:g})"] = r
    res["seconds"] = round(time.time() - t0, 1)
    out = ROOT / "bench" / "results" / "tabnas_toy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    for k, v in res["methods"].items():
        print(f"{k:28s} best {v['success_rate']:.3f}  infeasible {v['infeasible_rate']:.3f}  "
              f"worse-feasible {v['worse_feasible_rate']:.3f}  {list(v['found'].items())[:3]}")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
