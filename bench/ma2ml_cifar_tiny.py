"""MA2ML vs MA2ML-Lite vs random on real pipelines: the CIFAR-10 subset of configs/ma2ml_cifar10_tiny.py
(AUG 2 sub-policies x NB201 cell C=4, 1 cell/stage x HPO grids; 100 SGD steps of batch 32 per pipeline;
reward Acc (FLOPs / 2 MFLOPs)^-0.07), P pipelines per round trained side by side in one compiled
program (the evaluator's lanes), a few seeds; then the best pipeline found is retrained with
``--retrain-steps`` steps and compared with the same cell without augmentation and with the
evaluator's default hyper-parameters (lr 0.05, weight decay 5e-4, no label smoothing).

    python bench/ma2ml_cifar_tiny.py [--seeds 2] [--rounds 6] [--lanes 8] [--chunk-rounds 1]
                                     [--retrain-steps 400]

It accumulates: after every ``--chunk-rounds`` rounds each (method, seed) saves its strategy state
(replay buffer and critic included: every leaf is a plain array) and its rewards so far to
``bench/results/ma2ml_cifar_tiny/<method>_seed<k>.npz``; the same command with more ``--rounds`` or
``--seeds`` goes on from there (round r's key is ``fold_in(key(1000 + seed), r)``, so a run in pieces
equals one in one piece). Writes bench/results/ma2ml_cifar_tiny.json from every saved run (and prints
it as the last line), then retrains the best pipeline found. CPU budget:
``seconds`` per method in the JSON (summed over the pieces).
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
from jaxnas.config.experiment import build_space, load_data  # noqa: E402
from jaxnas.config.settings import raw_config, resolve  # noqa: E402
from jaxnas.engine import compile_cache  # noqa: E402
from jaxnas.evaluators.standalone import make as make_standalone  # noqa: E402
from jaxnas.spaces.product import ProductSpace  # noqa: E402
from jaxnas.strategies import make  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "ma2ml_cifar_tiny.json"
RUNS = REPO / "bench" / "results" / "ma2ml_cifar_tiny"
METHODS = (("ma2ml", {"lr": 0.1}), ("ma2ml_lite", {"lr": 0.1}), ("random", {}))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def load_run(path: Path, init_state, protocol):
    """(state, rewards [T, P], archs [T, P, D], seconds) saved by an earlier piece, or a fresh start."""
    if path.exists():
        z = np.load(path)
        if json.loads(str(z["protocol"])) != protocol:
            raise SystemExit(f"{path} was run with {json.loads(str(z['protocol']))}, not {protocol}: "
                             "delete it or pass the same --lanes/steps")
        leaves, treedef = jax.tree.flatten(init_state)
        state = jax.tree.unflatten(treedef, [jnp.asarray(z[f"leaf{i}"], l.dtype) for i, l in enumerate(leaves)])
        return state, z["rewards"], z["archs"], float(z["seconds"])
    return init_state, None, None, 0.0


def save_run(path: Path, state, rewards, archs, seconds, protocol):
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = {f"leaf{i}": np.asarray(l) for i, l in enumerate(jax.tree.leaves(state))}
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, rewards=rewards, archs=archs, seconds=seconds,
                        protocol=json.dumps(protocol), **leaves)
    os.replace(tmp, path)


def pipeline_round(s, space, ev, inputs, lanes: int):
    """One round: ``lanes`` pipelines sampled, trained and rated (one per lane, ``axis_name='data'``), the
    strategy ``s`` updated once; returns ``(state, (rewards [lanes], archs [lanes, D]))`` (a scan body)."""
    def round_(st, kr):
        def lane(kk):
            k_eval, k_step = jax.random.split(kk)
            arch = space.sample(k_step, st.logits if hasattr(st, "logits") else space.uniform_logits())
            new, m = s.step(st, k_step, ev.reward_fn({}, inputs, None, k_eval))
            return new, m["reward"], arch
        new, r, a = jax.vmap(lane, axis_name="data", out_axes=(None, 0, 0))(jax.random.split(kr, lanes))
        return new, (r, a)
    return round_


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--chunk-rounds", type=int, default=1, help="rounds per compiled call (and per save)")
    ap.add_argument("--retrain-steps", type=int, default=400, help="0: no retrain")
    ap.add_argument("--data", default=None, help="npz path (default: the config's)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--runs", default=str(RUNS), help="folder of the saved (method, seed) runs")
    ap.add_argument("--methods", default=",".join(m for m, _ in METHODS),
                    help="run (or extend) only these; the JSON keeps the others' rows")
    args = ap.parse_args()
    compile_cache.ensure()  # each extension of a run loads its three programs instead of compiling them
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
    protocol = {"lanes": args.lanes, "steps_per_pipeline": ev.cfg.steps, "data": Path(cfg["data"]["path"]).name}
    best_overall = (-np.inf, None)
    chosen = args.methods.split(",")
    old = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    out["methods"] = {k: v for k, v in old.get("methods", {}).items() if k not in chosen}
    for name, opts in METHODS:
        if name not in chosen:
            continue
        # constant learning rates (the defaults): total_steps does not change a round, so runs extend
        if name == "ma2ml":   # the policies move after the first round (min_buffer 8 held 4 lanes back a round)
            opts = {**opts, "min_buffer": min(8, args.lanes)}
        s = make(name, space, axis_name="data", total_steps=args.rounds, **opts)

        run = jax.jit(lambda st, keys: jax.lax.scan(pipeline_round(s, space, ev, inputs, args.lanes), st, keys))
        rs, archs, secs = [], [], 0.0
        for seed in range(args.seeds):
            path = Path(args.runs) / f"{name}_seed{seed}.npz"
            state, r_all, a_all, sec = load_run(path, s.init(jax.random.key(seed)), protocol)
            done = 0 if r_all is None else len(r_all)
            while done < args.rounds:
                n = min(args.chunk_rounds, args.rounds - done)
                keys = jax.vmap(lambda t: jax.random.fold_in(jax.random.key(1000 + seed), t))(done + jnp.arange(n))
                t0 = time.perf_counter()
                state, (r, a) = run(state, keys)
                r, a = np.asarray(r), np.asarray(a)
                sec += time.perf_counter() - t0
                r_all = r if r_all is None else np.concatenate([r_all, r])
                a_all = a if a_all is None else np.concatenate([a_all, a])
                done += n
                save_run(path, state, r_all, a_all, sec, protocol)
                log(f"{name} seed {seed}: round {done}/{args.rounds} best {np.max(r_all):.4f} ({sec:.0f}s)")
            rs.append(r_all[:args.rounds])                      # a longer saved run: its first rounds
            archs.append(a_all[:args.rounds])
            secs += sec
        r, a = np.stack(rs), np.stack(archs)                    # [S, T, P], [S, T, P, D]
        best = np.maximum.accumulate(r.max(2), 1)
        i = np.unravel_index(np.argmax(r), r.shape)
        if r[i] > best_overall[0]:
            best_overall = (float(r[i]), a[i])
        out["methods"][name] = {"seeds": args.seeds, "rounds": args.rounds, "seconds": round(secs, 1),
                                "best_so_far_mean": best.mean(0).round(4).tolist(),
                                "best_so_far_std": best.std(0).round(4).tolist(),
                                "round_mean_reward": r.mean((0, 2)).round(4).tolist(),
                                "final_best": float(best[:, -1].mean()),
                                "best_pipeline": space.encode(a[i]), "best_reward": float(r[i])}
        log(json.dumps(out["methods"][name]))
    Path(args.out).write_text(json.dumps(out, indent=1, default=float))
    if args.retrain_steps <= 0:
        print(json.dumps({k: v["final_best"] for k, v in out["methods"].items()}))
        return
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
