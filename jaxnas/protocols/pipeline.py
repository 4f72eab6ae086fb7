"""The ``pipeline`` (MA2ML) retrain protocol: the best pipeline of the search (its augmentation policy,
its NAS-Bench-201 cell and its hyper-parameters, one choice per agent) trained from scratch over
``seeds`` with the search evaluator's training (``jaxnas.training.standalone.pipeline_step``: the
pipeline's own AutoAugment policy on every batch, its own learning rate / weight decay / label
smoothing / momentum) for ``steps`` steps (default: the evaluator's ``result_steps``, else its
``max_steps``). The seeds are lanes of one compiled step (``standalone.pipeline_step``, the step the
in-search evaluator scans) trained by the one checkpointed loop (``jaxnas.training.pipeline_runs`` on
``jaxnas.training.loop``): checkpoints every ``checkpoint_every`` steps in ``retrain/lanes/``, a
SIGTERM / SIGINT stops at the next chunk boundary with a checkpoint, and a rerun resumes bit-exactly.
Lanes run as the search evaluator's ``lane_mode`` says (``auto``: a loop on CPU, batched elsewhere).
The answer is the seed with the lowest validation loss; every seed's parameters are kept in
``retrain/c0_s<seed>/``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.core.workdir import atomic_write_json, progress_line, save_tree
from jaxnas.data.images import normalize
from jaxnas.data.inputs import input_info
from jaxnas.evaluators.standalone import pipeline_config
from jaxnas.models.specs import build_model, nb201_one_hot_spec
from jaxnas.protocols.base import RETRAIN_DIR, RunContext, choose_best, mean_metrics, register, searched_arch, seed_list
from jaxnas.tasks.classification import classification_loss
from jaxnas.training.image_runs import test_split
from jaxnas.training.loop import Schedule
from jaxnas.training.pipeline_runs import train_pipelines


def default_settings(cfg: dict) -> dict:
    o = cfg["evaluator"]
    steps = o.get("result_steps") or o.get("max_steps") or 200
    return {"seeds": 3, "top": 1, "steps": int(steps), "batch_size": int(o["batch_size"]),
            "eval_batch": int(o["eval_batch"]), "chunk": 50, "log_every": 100, "checkpoint_every": 200}


def lane_mode(cfg: dict) -> str:
    """How the seeds' lanes run: the search evaluator's ``lane_mode`` (``auto``: a loop on CPU)."""
    mode = cfg["evaluator"].get("lane_mode", "auto")
    if mode == "auto":
        mode = "sequential" if jax.default_backend() == "cpu" else "vmap"
    return mode


def spec(cfg: dict, space, arch, data, s: dict) -> dict:
    return nb201_one_hot_spec(space.sub(space.nas), space.split(np.asarray(arch, np.int32), space.nas))


def run(ctx: RunContext):
    rdir, cfg, result, s, progress = ctx.rdir, ctx.cfg, ctx.result, ctx.settings, ctx.progress
    data, space, arch = searched_arch(cfg, result)
    pc = dataclasses.replace(pipeline_config(cfg["evaluator"], data), steps=int(s["steps"]),
                             batch_size=int(s["batch_size"]), eval_batch=min(int(s["eval_batch"]), len(data.y_val)))
    seeds = seed_list(s)
    agents = space.describe(arch)["agents"]
    progress_line(progress, f"retraining the pipeline {agents} over {len(seeds)} seed(s), {pc.steps} steps each")
    schedule = Schedule(0, int(s["chunk"]), int(s["log_every"]), int(s["checkpoint_every"]))
    out = train_pipelines(Path(rdir) / "lanes", data, space, np.repeat(np.asarray(arch)[None], len(seeds), 0), seeds,
                          pc, schedule=schedule, lanes=lane_mode(cfg), progress=progress, label="pipeline seeds",
                          stop_after=ctx.stop_after, stop=ctx.stop)
    if out is None:
        return None
    seconds = out["seconds"]
    net_spec = spec(cfg, space, arch, data, s)
    test = test_split(data)
    runs = []
    for i, seed in enumerate(seeds):
        label = f"c0_s{seed}"
        params = jax.tree.map(lambda a: np.asarray(a)[i], out["params"])
        save_tree(Path(rdir) / label / "final", {"params": {"net": params}})
        run_ = {"seed": int(seed), "steps": pc.steps, "val_loss": float(out["val_loss"][i]),
                "val_accuracy": float(out["val_accuracy"][i]), "train_loss": float(out["train_loss"][i]),
                "seconds": seconds / len(seeds), "final": f"{RETRAIN_DIR}/{label}/final"}
        if test is not None:
            run_.update(_test_metrics(net_spec, params, test, data, pc.eval_batch))
        atomic_write_json(Path(rdir) / label / "run.json", run_)
        runs.append(run_)
    cand = {"arch": space.encode(arch), "arch_indices": arch.tolist(), "pipeline": agents,
            "param_count": int(sum(np.size(x) for x in jax.tree.leaves(out["params"])) // len(seeds)),
            "flops": float(space.flops(arch)), "runs": runs, "mean": mean_metrics(runs), "model": net_spec}
    best = choose_best([cand])
    progress_line(progress, f"retrained the pipeline {cand['arch']}: val accuracy {best['val_accuracy']:.4f} "
                            f"(loss {best['val_loss']:.4f}), seed {best['seed']}")
    return {"protocol": "pipeline", "seeds": seeds, "candidates": [cand], "best": best, "input": input_info(data)}


def _test_metrics(net_spec, params, test, data, eval_batch: int) -> dict:
    """The test split in batches of ``eval_batch`` (BN on each batch's statistics, as validation)."""
    model = build_model(net_spec)
    apply = jax.jit(lambda x: model.apply({"params": {"net": params}},
                                          normalize(x, tuple(data.mean), tuple(data.std))))
    x = np.asarray(test[0], np.float32)
    logits = jnp.concatenate([apply(jnp.asarray(x[i:i + eval_batch])) for i in range(0, len(x), eval_batch)])
    loss, acc = classification_loss(logits, jnp.asarray(test[1], jnp.int32))
    return {"test_loss": float(loss), "test_accuracy": float(acc)}


register("pipeline", default_settings=default_settings, spec=spec, run=run)
