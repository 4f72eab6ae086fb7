"""The ``mlp`` (TabNAS) retrain protocol: the Alg. 3 candidates (``select_final_n``: the ``top`` <= 3
feasible, unique architectures of largest cost among ``num_final_samples`` policy samples; strategies
without a budget: the most probable architectures) x ``seeds``, trained as vmapped lanes of one compiled
step (``member_batch`` members per program) by the checkpointed loop (``jaxnas.training.mlp_runs``:
a killed retrain resumes in ``retrain/members<g>/``), with the weight-training
settings of the search (its optimizer and batch size, Adam eps 1e-3) unless overridden; members are
masked MLPs as wide as the widest candidate per layer (``NarrowedSpace``). The answer is the
candidate with the lowest validation loss averaged over seeds (and its best seed's parameters).
Balanced error is reported (the metric TabNAS reports)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxnas.config.experiment import build
from jaxnas.core.workdir import progress_line, save_tree
from jaxnas.data.inputs import input_info
from jaxnas.engine.search import state_digest
from jaxnas.models.specs import mlp_spec
from jaxnas.protocols.base import RETRAIN_DIR, RunContext, choose_best, mean_metrics, register, seed_list
from jaxnas.spaces.base import NEG_INF
from jaxnas.strategies import budget as B
from jaxnas.strategies.tabnas import select_final_n
from jaxnas.training.image_runs import test_split
from jaxnas.training.loop import Schedule
from jaxnas.training.mlp_runs import member_metrics, train_members
from jaxnas.training.standalone import TrainConfig, train_config_from


def default_settings(cfg: dict) -> dict:
    # TabNAS retrains with the weight-training settings of the search (Table 2)
    tc = train_config_from(cfg)
    return {"seeds": 3, "top": 3, "epochs": tc.epochs, "batch_size": tc.batch_size, "lr": tc.lr,
            "schedule": tc.schedule, "optimizer": tc.optimizer, "b1": float(tc.b1), "b2": float(tc.b2),
            "eps": TrainConfig.eps, "momentum": float(tc.momentum), "max_steps": None,
            "num_final_samples": 500, "member_batch": 64, "eval_batch": 4096,
            "chunk": 200, "log_every": 1000, "checkpoint_every": 2000}   # chunk: steps per compiled call


def restore_search_state(exp, workdir: Path, result: Optional[dict] = None):
    """The final SearchState of the search in ``workdir``: the checkpoint of the result's step (the
    newest when no result is given), checked against the result's state digest."""
    root = (workdir / "checkpoints").resolve()
    if not root.exists():
        raise FileNotFoundError(f"{workdir} has no checkpoints/: the candidates of Alg. 3 come from the "
                                f"final policy, which the search checkpoints")
    init = exp.search.init(jax.random.key(int(exp.config["seed"])))   # host-side init (numpy rng)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, init)
    with ocp.CheckpointManager(root) as mgr:
        steps = [int(x) for x in mgr.all_steps()]
        step = int(result["step"]) if result is not None and "step" in result else (max(steps) if steps else None)
        if step is None or step not in steps:
            raise FileNotFoundError(f"{root} has no checkpoint of the final step {step} (has {sorted(steps)}); "
                                    f"rerun `jaxnas search` on this work dir to finish it")
        try:
            state = mgr.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # noqa: BLE001  (orbax / tensorstore raise many types for a damaged file)
            raise ValueError(f"the checkpoint of the final step {step} in {root} does not restore "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]}): Alg. 3 needs the final "
                             f"policy; rerun the search with --force-restart to redo it") from None
    want = (result or {}).get("state_digest")
    if want is not None and state_digest(state) != want:
        raise ValueError(f"the checkpoint of step {step} in {root} is not the state result.json describes "
                         f"(state digests differ); rerun `jaxnas search` on this work dir")
    return state


def mlp_candidates(exp, strategy_state, n: int, num_samples: int = 500) -> np.ndarray:
    """TabNAS Alg. 3: the ``n`` unique feasible architectures of largest cost among ``num_samples``
    samples of the final policy (fixed key). Strategies without a budget: the ``n`` most probable
    distinct architectures among the samples (the per-decision argmax first)."""
    space = exp.space
    mask = jnp.asarray(space.mask)
    logits = getattr(strategy_state, "logits", None)
    if logits is None:
        probs = jnp.asarray(exp.strategy.probs(strategy_state), jnp.float32)
        logits = jnp.where(mask, jnp.log(jnp.maximum(probs, 1e-30)), NEG_INF)
    logits = jnp.asarray(logits, jnp.float32)
    s = exp.config["strategy"]
    if s.get("budget") is not None:
        budget = B.make_budget(space, s["budget"], cost_fn=s.get("cost_fn"), cost_terms=s.get("cost_terms"))
        archs = select_final_n(budget, logits, jax.random.key(0), n=n, num_samples=num_samples)
        if len(archs) == 0:
            raise ValueError(f"none of {num_samples} samples of the final policy meets the budget "
                             f"{s['budget']}; raise num_final_samples")
        return np.asarray(archs, np.int32)
    logp = np.asarray(jax.nn.log_softmax(jnp.where(mask, logits, NEG_INF), -1))
    first = np.asarray(space.derive(logits))
    samples = np.asarray(space.sample(jax.random.key(0), logits, (num_samples,)))
    uniq = np.unique(np.concatenate([first[None], samples]), axis=0)
    lp = np.take_along_axis(logp[None], uniq[..., None], -1)[..., 0].sum(-1)
    order = np.argsort(-lp, kind="stable")
    archs = [first] + [a for a in uniq[order] if not np.array_equal(a, first)]
    return np.asarray(archs[:n], np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class NarrowedSpace:
    """An MLP space seen through the widest candidate of each layer: ``train_members`` trains every
    member as the masked MLP of ``max_widths``; a member is the same child MLP for any max widths >=
    its own (masked units are exact zeros), so cutting them to the candidates' maxima trains the
    same networks (from other random draws) at a fraction of the cost of the space's widest choice
    (e.g. 256-32 and 176-64 under a 512-512 space: about 10x fewer FLOPs)."""
    space: Any
    max_widths: tuple

    def __getattr__(self, name):
        return getattr(self.space, name)


def narrowed_space(space, archs) -> NarrowedSpace:
    widths = np.asarray(space.arch_widths(np.asarray(archs, np.int32))).reshape(-1, space.num_layers)
    return NarrowedSpace(space, tuple(int(w) for w in widths.max(0)))


def run(ctx: RunContext) -> dict:
    workdir, rdir, cfg, result, s, progress = ctx.workdir, ctx.rdir, ctx.cfg, ctx.result, ctx.settings, ctx.progress
    exp = build(cfg)
    state = restore_search_state(exp, workdir, result)
    archs = mlp_candidates(exp, state.strategy, s["top"], s["num_final_samples"])
    seeds = seed_list(s)
    space, data = exp.space, exp.data
    tc = TrainConfig(epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"], schedule=s["schedule"],
                     optimizer=s["optimizer"], b1=s["b1"], b2=s["b2"], eps=s["eps"], momentum=s["momentum"],
                     max_steps=s["max_steps"])
    A, S = len(archs), len(seeds)
    narrow = narrowed_space(space, archs)
    widths = np.repeat(np.asarray(space.arch_widths(archs)), S, 0)        # member m = (a, s): a * S + s
    mseeds = np.tile(np.asarray(seeds), A)
    mb = int(s["member_batch"])
    groups = range(0, A * S, mb)
    progress_line(progress, f"retraining {A} candidate(s) x {S} seed(s) = {A * S} MLPs as vmapped lanes "
                  f"({len(groups)} program(s)), {tc.total_steps(len(data.y_train))} steps each: " +
                  ", ".join(space.encode(a) for a in archs))
    schedule = Schedule(0, int(s["chunk"]), int(s["log_every"]), int(s["checkpoint_every"]))
    parts = []
    for g, i in enumerate(groups):
        got = train_members(rdir / f"members{g}", data, narrow, widths[i:i + mb], mseeds[i:i + mb], tc,
                            schedule=schedule, progress=progress, label=f"members {i}-{min(i + mb, A * S) - 1}",
                            stop_after=ctx.stop_after, stop=ctx.stop)
        if got is None:
            return None
        parts.append(got)
    flat = jax.tree.map(lambda *a: np.concatenate(a), *[p["params"] for p in parts])
    train_loss = np.concatenate([p["train_loss"] for p in parts])
    ncls, mw = int(data.num_classes), tuple(narrow.max_widths)
    vm = member_metrics(flat, jnp.asarray(widths), mw, data.x_val, data.y_val, ncls, "val", s["eval_batch"])
    test = test_split(data)
    tm = member_metrics(flat, jnp.asarray(widths), mw, test[0], test[1], ncls, "test", s["eval_batch"]) if test else {}
    params = jax.tree.map(lambda a: a.reshape((A, S) + a.shape[1:]), flat)
    save_tree(rdir / "params", params)
    candidates = []
    for a in range(A):
        runs = []
        for si, seed in enumerate(seeds):
            m = a * S + si
            run = {"seed": int(seed), **{k: float(np.asarray(v)[m]) for k, v in {**vm, **tm}.items()},
                   "train_loss": float(train_loss[m]), "seconds": None}  # trained together: see program_seconds
            runs.append(run)
        candidates.append({"arch": space.encode(archs[a]), "arch_indices": archs[a].tolist(),
                           "param_count": int(space.param_count(archs[a])), "runs": runs,
                           "mean": mean_metrics(runs), "model": mlp_spec(space, archs[a])})
    best = choose_best(candidates)
    progress_line(progress, f"best on validation: {best['arch']} (mean val loss {best['mean_val_loss']:.4f}, "
                   f"seed {best['seed']})")
    return {"protocol": "tabnas_alg3", "seeds": seeds, "candidates": candidates, "best": best,
            "program_seconds": float(sum(p["seconds"] for p in parts)), "steps_per_run": int(parts[0]["total_steps"]),
            "members": A * S, "programs": len(parts),
            "member_max_widths": list(narrow.max_widths), "params_path": str(Path(RETRAIN_DIR) / "params"), "input": input_info(data)}


def spec(cfg: dict, space, arch, data, settings: dict) -> dict:
    return mlp_spec(space, arch)


register("mlp", default_settings=default_settings, spec=spec, run=run)
