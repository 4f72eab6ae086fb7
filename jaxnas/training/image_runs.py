"""From-scratch training of a discrete image network (the NAS-Bench-201 network, the DARTS evaluation
network) with the one checkpointed training loop (``jaxnas.training.loop``: ``chunk`` steps per
compiled call, orbax checkpoints every ``checkpoint_every`` steps in the run's folder, resume with the
same data order: batches are a function of the seed and the step), then the validation (and test)
metrics and the final variables. The retrain protocols of the cell spaces
(``jaxnas.protocols.cells``) call it."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas.core import optim
from jaxnas.core.cpu_compile import compiler_options
from jaxnas.core.workdir import atomic_write_json, progress_line, save_tree
from jaxnas.data.images import normalize, random_crop_flip
from jaxnas.models.networks.darts_eval import DartsEvalNet, param_count
from jaxnas.models.supernets.init import init_variables
from jaxnas.tasks.classification import classification_loss
from jaxnas.training.loop import Schedule, finished_run, run_chunks
from jaxnas.training.standalone import balanced_error


def test_split(data):
    """``(x_test, y_test)`` of data that has a test split, else None."""
    x, y = getattr(data, "x_test", None), getattr(data, "y_test", None)
    return (x, y) if x is not None and y is not None else None


def cutout(key, images, length: int):
    """DeVries & Taylor cutout as DARTS applies it: per example a ``length`` x ``length`` square
    (clipped at the border) around a uniform centre is set to 0 (after normalisation)."""
    n, h, w, _ = images.shape
    ky, kx = jax.random.split(key)
    cy = jax.random.randint(ky, (n, 1), 0, h)
    cx = jax.random.randint(kx, (n, 1), 0, w)
    half = length // 2
    ys, xs = jnp.arange(h)[None], jnp.arange(w)[None]
    my = (ys >= cy - half) & (ys < cy + half)
    mx = (xs >= cx - half) & (xs < cx + half)
    m = my[:, :, None] & mx[:, None, :]
    return jnp.where(m[..., None], jnp.zeros((), images.dtype), images)


def call_network(net, variables, x, train, drop, rng, mutable=False, control_flow: bool = False):
    kw = {"drop_path": drop} if isinstance(net, DartsEvalNet) else {}
    return net.apply(variables, x, train=train, rngs={"dropout": rng} if rng is not None else None,
                     mutable=mutable, control_flow=control_flow, **kw)


def evaluate_split(eval_fn, variables, x, y, num_classes: int, eval_batch: int, prefix: str) -> dict:
    n = len(y)
    outs = []
    for i in range(0, n, eval_batch):
        xb = np.asarray(x[i:i + eval_batch])
        pad = eval_batch - len(xb)
        if pad:  # one compiled shape
            xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
        outs.append(np.asarray(eval_fn(variables, xb))[:eval_batch - pad])
    logits = jnp.asarray(np.concatenate(outs))
    yj = jnp.asarray(y, jnp.int32)
    loss, acc = classification_loss(logits, yj)
    return {f"{prefix}_loss": float(loss), f"{prefix}_accuracy": float(acc),
            f"{prefix}_balanced_error": float(balanced_error(logits, yj, num_classes))}


def train_image_run(net, data, s: dict, seed: int, run_dir: Path, progress=None, label: str = "",
                    stop_after: Optional[int] = None, final_as: Optional[str] = None, stop=None) -> Optional[dict]:
    """Train ``net`` (a discrete cell network with tracked BN) from scratch on ``data`` (ImageData)
    with settings ``s`` and ``seed``; checkpoints / resumes in ``run_dir``; returns the run's
    metrics (also ``run_dir/run.json``; final variables in ``run_dir/final``). ``stop_after``: stop
    after that many steps of this session (None returned; a rerun resumes). ``final_as``: how the run
    records the path of its final variables (default ``run_dir/final``)."""
    run_dir = Path(run_dir)
    before = finished_run(run_dir, progress, label)
    if before is not None:
        return before
    n, bs = len(data.y_train), int(s["batch_size"])
    if n < bs:
        raise ValueError(f"batch_size {bs} exceeds the {n} training examples; lower batch_size")
    spe = n // bs
    total = s["epochs"] * spe if s["max_steps"] is None else min(int(s["max_steps"]), s["epochs"] * spe)
    tx = optim.make_optimizer(s["optimizer"], s["lr"], momentum=s["momentum"], nesterov=s["nesterov"],
                              weight_decay=s["weight_decay"], clip=s["grad_clip"], schedule=s["schedule"],
                              total_steps=total, what="retrain")
    mean, std = tuple(data.mean), tuple(data.std)
    ncls = int(data.num_classes)
    aux_w, cut, augment = float(s["auxiliary_weight"]), int(s["cutout"]), bool(s["augment"])
    k_init, k_train = jax.random.split(jax.random.key(int(seed)))
    x0 = jnp.zeros((2,) + tuple(data.x_train.shape[1:]), jnp.float32)

    def init():   # values drawn on the host (jaxnas.models.supernets.init): no XLA compile of the RNG calls
        v = init_variables(net, k_init, x0, train=False)
        params, stats = v["params"], v.get("batch_stats", {})
        return {"params": params, "batch_stats": stats, "opt_state": tx.init(params),
                "step": jnp.zeros((), jnp.int32)}

    drop_path, epochs = float(s["drop_path"]), max(int(s["epochs"]), 1)

    def train_step(state, batch):
        x, y = batch
        key = jax.random.fold_in(k_train, state["step"])
        k_aug, k_cut, k_drop = jax.random.split(key, 3)
        # DARTS: the drop-path rate rises linearly over the epochs
        drop = drop_path * (state["step"] // spe).astype(jnp.float32) / epochs
        if augment:
            x = random_crop_flip(k_aug, x)
        x = normalize(x, mean, std)
        if cut:
            x = cutout(k_cut, x, cut)

        def loss_fn(params):
            # a scan body: the convs take the CPU gradient (XLA's own is slow in a loop on CPU)
            out, upd = call_network(net, {"params": params, "batch_stats": state["batch_stats"]}, x, True, drop,
                                    k_drop, mutable=["batch_stats"], control_flow=True)
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss, acc = classification_loss(logits, y)
            obj = loss if aux is None else loss + aux_w * classification_loss(aux, y)[0]
            return obj, (loss, acc, upd.get("batch_stats", {}))
        (_, (loss, acc, stats)), g = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        upd, opt = tx.update(g, state["opt_state"], state["params"])
        new = {"params": optax.apply_updates(state["params"], upd), "batch_stats": stats,
               "opt_state": opt, "step": state["step"] + 1}
        return new, {"loss": loss, "accuracy": acc}

    def batches(first, count):   # the data order: a function of the seed and the step
        idx = []
        for t in range(first, first + count):
            perm = np.random.default_rng([int(seed), t // spe]).permutation(n)
            idx.append(np.sort(perm[(t % spe) * bs:(t % spe + 1) * bs]))
        idx = np.stack(idx)
        return data.x_train[idx], data.y_train[idx].astype(np.int32)

    options = compiler_options(s.get("cpu_convolutions", "xla"), jax.default_backend())

    @partial(jax.jit, compiler_options=options)
    def eval_fn(variables, x):
        return call_network(net, variables, normalize(x, mean, std), False, 0.0, None)

    state = init()
    progress_line(progress, f"[{label}] training {total} steps ({spe} per epoch, batch {bs}), "
                            f"{param_count(state['params']):,} parameters")
    schedule = Schedule(total, int(s.get("chunk") or 1), int(s["log_every"]), int(s["checkpoint_every"]))
    done_ = run_chunks(run_dir, state, train_step, batches, schedule, progress=progress, label=label,
                       stop_after=stop_after, stop=stop, compiler_options=options)
    if done_ is None:
        return None
    state, seconds = done_.state, done_.seconds
    last = {"train_loss": done_.last.get("loss"), "train_accuracy": done_.last.get("accuracy")}
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    save_tree(run_dir / "final", jax.device_get(variables))
    cap = s["max_eval"]
    out = {"seed": int(seed), "steps": int(total), **last}
    out.update(evaluate_split(eval_fn, variables, data.x_val[:cap], data.y_val[:cap], ncls, s["eval_batch"], "val"))
    test = test_split(data)
    if test is not None:
        out.update(evaluate_split(eval_fn, variables, test[0][:cap], test[1][:cap], ncls, s["eval_batch"], "test"))
    out["param_count"] = param_count(state["params"])
    out["seconds"] = seconds
    out["final"] = final_as or str(run_dir / "final")
    atomic_write_json(run_dir / "run.json", out)
    return out
