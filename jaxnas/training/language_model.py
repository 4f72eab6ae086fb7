"""From-scratch training of a recurrent language model (AdvantageNAS App. E): truncated BPTT over the
windows of an epoch (the hidden state carried over windows, reset at each epoch), SGD with clipping,
then the validation and test splits scored with the state carried over every window. The ``rnn``
retrain protocol and ``bench/ptb_tiny.py`` call it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas.core import optim
from jaxnas.core.workdir import atomic_write_json, save_tree
from jaxnas.data.text import batchify, window_count
from jaxnas.models.supernets.rnn import count_params, init_rnn_params
from jaxnas.tasks.language_model import check_tokens, stream_loss, token_nll
from jaxnas.training.loop import Schedule, finished_run, run_chunks


def lm_train_step(net, opt, **apply_kwargs):
    """One truncated-BPTT weight step of the language model ``net`` (App. E: the mean token NLL of
    a window, the hidden state carried in and returned without gradient):
    ``step(params, opt_state, h, x, y, key, *args) -> (params, opt_state, h, loss)``, unjitted (a
    caller jits it or scans it over windows). ``*args`` and ``apply_kwargs`` go to ``net.apply``
    after ``x, h`` (the supernet's cell weights and ``mode``)."""

    def step(params, opt_state, h, x, y, k, *args):
        def loss_fn(p):
            logits, h2 = net.apply({"params": p}, x, h, *args, train=True, dropout_key=k, **apply_kwargs)
            tot, n = token_nll(logits, y)
            return tot / n, h2
        (loss, h2), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, jax.lax.stop_gradient(h2), loss
    return step


def train_lm_run(net, data, s: dict, seed: int, run_dir, progress=None, stop_after=None,
                 final_as: Optional[str] = None, stop=None) -> Optional[dict]:
    """Trains ``net`` with settings ``s`` (batch_size, bptt, epochs, lr, momentum, weight_decay,
    grad_clip, schedule, eval_batch, max_steps, log_every, checkpoint_every, chunk) and ``seed`` with
    the one checkpointed training loop (``jaxnas.training.loop``): a killed run resumes to the
    uninterrupted result (the state, the hidden state and the losses of the last epoch are all
    checkpointed; the windows and the dropout keys are functions of the step). Returns the run's metrics (also
    ``run_dir/run.json``; final parameters in ``run_dir/final``, recorded as ``final_as``), or None
    when ``stop_after`` steps of this session stopped it first."""
    run_dir = Path(run_dir)
    before = finished_run(run_dir, progress, f"seed {seed}")
    if before is not None:
        return before
    B, L = int(s["batch_size"]), int(s["bptt"])
    check_tokens("retrain training stream (batch_size, bptt, data.max_train)", len(data.x_train), B, L)
    src = batchify(data.x_train, B)
    W = window_count(src.shape[0], L)
    total = int(s["epochs"]) * W
    if s.get("max_steps"):
        total = min(total, int(s["max_steps"]))
    opt = optim.make_optimizer("sgd", float(s["lr"]), momentum=float(s["momentum"]),
                               weight_decay=float(s["weight_decay"]), clip=s["grad_clip"],
                               schedule=s["schedule"], total_steps=max(total, 1), what="retrain")
    key = jax.random.key(int(seed))
    params = init_rnn_params(net, key)
    H = net.space.hidden_size
    state = {"params": params, "opt_state": opt.init(params), "h": jnp.zeros((B, H), jnp.float32),
             "losses": jnp.full((W,), jnp.nan, jnp.float32), "step": jnp.zeros((), jnp.int32)}
    train_step = lm_train_step(net, opt)

    def step(state, batch):
        x, y = batch
        t = state["step"]
        h = jnp.where(t % W == 0, 0.0, state["h"])          # each epoch starts from a zero state
        p, o, h, loss = train_step(state["params"], state["opt_state"], h, x, y, jax.random.fold_in(key, t))
        return {"params": p, "opt_state": o, "h": h, "losses": state["losses"].at[t % W].set(loss),
                "step": t + 1}, {"loss": loss}

    def batches(first, count):   # window t % W of the epoch: a function of the step
        ws = [(t % W) * L for t in range(first, first + count)]
        return np.stack([src[w:w + L] for w in ws]), np.stack([src[w + 1:w + 1 + L] for w in ws])

    schedule = Schedule(total, int(s.get("chunk") or 1), int(s["log_every"] or total),
                        int(s.get("checkpoint_every") or total))
    done_ = run_chunks(run_dir, state, step, batches, schedule, progress=progress, label=f"seed {seed}",
                       stop_after=stop_after, stop=stop)
    if done_ is None:
        return None
    state, seconds = done_.state, done_.seconds
    losses = np.asarray(jax.device_get(state["losses"]))
    train_loss = float(np.nanmean(losses)) if total else float("nan")
    if not np.isfinite(train_loss):
        raise FloatingPointError(f"retrain seed {seed}: the training loss became {train_loss}: lower lr "
                                 f"or set grad_clip")
    params = state["params"]
    save_tree(run_dir / "final", {"params": jax.device_get(params)})
    val = stream_loss(net, params, data.x_val, int(s["eval_batch"]), L)
    test = stream_loss(net, params, data.x_test, int(s["eval_batch"]), L)
    out = {"seed": int(seed), "steps": total, "epochs": total / W, "train_loss": train_loss,
           "val_loss": val["loss"], "val_perplexity": val["perplexity"],
           "test_loss": test["loss"], "test_perplexity": test["perplexity"],
           "param_count": count_params(params), "seconds": seconds,
           "final": final_as or str(run_dir / "final")}
    atomic_write_json(run_dir / "run.json", out)
    return out
