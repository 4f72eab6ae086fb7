"""MA2ML vs MA2ML-Lite vs random on real pipelines: the CIFAR-10 subset of configs/ma2ml_cifar10_tiny.py
(AUG 2 sub-policies x NB201 cell C=4, 1 cell/stage x HPO grids; 100 SGD steps of batch 32 per pipeline;
reward Acc (FLOPs / 2 MFLOPs)^-0.07), P pipelines per round trained side by side in one compiled
program (the evaluator's lanes), a few seeds; then the best pipeline found is retrained with
``--retrain-steps`` steps and compared with the same cell without augmentation and with the
evaluator's default hyper-parameters (lr 0.05, weight decay 5e-4, no label smoothing).

    python bench/ma2ml_cifar_tiny.py [--seeds 2] [--rounds 6] [--lanes 8] [--retrain-steps 400]

Writes bench/results/ma2ml_cifar_tiny.json (and prints it as the last line). CPU budget: state the
wall time of the run (``seconds`` per method in the JSON).
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
from jaxnas.build import build_space, load_data  # noqa: E402
from jaxnas.config import raw_config, resolve  # noqa: E402
from jaxnas.evaluators.standalone import make as make_standalone  # noqa: E402
from jaxnas.spaces.product import ProductSpace  # noqa: E402
from jaxnas.strategies import make  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "ma2ml_cifar_tiny.json"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--retrain-steps", type=int, default=400)
    ap.add_argument("--data", default=None, help="npz path (default: the config's)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    cfg = resolve(raw_config(REPO / "configs" / "ma2ml_cifar10_tiny.py"))
    if args.data:
        cfg["data"]["path"] = args.data
    data = load_data(cfg)
    space = build_space(cfg, data)
    ev_opts = {k: v for k, v in cfg["evaluator"].items() if k != "name"}
    ev = make_standalone(ev_opts, cfg=cfg, space=space, data=data)
    inputs = ev.inputs()
    out = {"config": "configs/ma2ml_cifar10_tiny.py", "data": str(cfg["data"]["path"]), "seeds": args.seeds,
           "rounds": args.rounds, "lanes": args.lanes, "steps_per_pipeline": ev.cfg.steps,
           "machine": f"{platform.machine()} {os.cpu_count()} cpus, jax {jax.__version__}", "methods": {}}
    best_overall = (-np.inf, None)
    for name, opts in (("ma2ml", {"lr": 0.1}), ("ma2ml_lite", {"lr": 0.1}), ("random", {})):
        s = make(name, space, axis_name="data", total_steps=args.rounds, **opts)

        def round_(st, k):
            def lane(kk):
                k_eval, k_step = jax.random.split(kk)
                arch = space.sample(k_step, st.logits if hasattr(st, "logits") else space.uniform_logits())
                new, m = s.step(st, k_step, ev.reward_fn({}, inputs, None, k_eval))
                return new, m["reward"], arch
            new, r, a = jax.vmap(lane, axis_name="data", out_axes=(None, 0, 0))(jax.random.split(k, args.lanes))
            return new, (r, a)
        run = jax.jit(lambda st, key: jax.lax.scan(round_, st, jax.random.split(key, args.rounds)))
        t0 = time.perf_counter()
        rs, archs = [], []
        for seed in range(args.seeds):
            _, (r, a) = run(s.init(jax.random.key(seed)), jax.random.key(1000 + seed))
            rs.append(np.asarray(r))
            archs.append(np.asarray(a))
            log(f"{name} seed {seed}: best {np.max(rs[-1]):.4f} ({time.perf_counter() - t0:.0f}s)")
        r, a = np.stack(rs), np.stack(archs)                    # [S, T, P], [S, T, P, D]
        best = np.maximum.accumulate(r.max(2), 1)
        i = np.unravel_index(np.argmax(r), r.shape)
        if r[i] > best_overall[0]:
            best_overall = (float(r[i]), a[i])
        out["methods"][name] = {"seconds": round(time.perf_counter() - t0, 1),
                                "best_so_far_mean": best.mean(0).round(4).tolist(),
                                "round_mean_reward": r.mean((0, 2)).round(4).tolist(),
                                "final_best": float(best[:, -1].mean()),
                                "best_pipeline": space.encode(a[i]), "best_reward": float(r[i])}
        log(json.dumps(out["methods"][name]))
    # retrain the best pipeline and the same cell without augmentation, default hyper-parameters
    arch = best_overall[1]
    bare = ProductSpace.create({"nas": space.sub("nas")}, nas="nas", image_hw=space.image_hw,
                               in_channels=space.in_channels)
    ev_bare = make_standalone({**ev_opts, "result_steps": args.retrain_steps}, cfg=cfg, space=bare, data=data)
    ev_best = make_standalone({**ev_opts, "result_steps": args.retrain_steps}, cfg=cfg, space=space, data=data)
    t0 = time.perf_counter()
    out["retrain"] = {"steps": args.retrain_steps, "pipeline": space.encode(arch),
                      "best_pipeline": ev_best.result({}, arch),
                      "same_cell_no_aug_default_hpo": ev_bare.result({}, space.split(arch, "nas")),
                      "seconds": round(time.perf_counter() - t0, 1)}
    Path(args.out).write_text(json.dumps(out, indent=1, default=float))
    print(json.dumps({k: v["final_best"] for k, v in out["methods"].items()}
                     | {"retrain_best": out["retrain"]["best_pipeline"]["standalone_val_accuracy"],
                        "retrain_plain": out["retrain"]["same_cell_no_aug_default_hpo"]["standalone_val_accuracy"]}))


if __name__ == "__main__":
    main()
