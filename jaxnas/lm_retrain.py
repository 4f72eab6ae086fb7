"""Retraining a searched recurrent cell (AdvantageNAS sec. 5.3 / App. E): ``jaxnas retrain WORKDIR``
on a ``space.name='rnn'`` search.

The discrete language model of the derived cell (:class:`jaxnas.supernets.rnn.RNNLanguageModel` with
``arch=``) is trained from scratch "with the same optimisation" as the search (App. E): SGD lr 20
cosine-annealed to 0 over all steps, gradient clipping 0.25, batch 256, BPTT 35, dropout 0.5, the
hidden state carried over the windows of an epoch (truncated BPTT) and reset at each epoch; 100
epochs. Then the whole validation and test splits are scored with the hidden state carried over
every window (DARTS ``evaluate``, ``eval_batch`` = 10 streams): ``val_perplexity`` /
``test_perplexity`` (Table 3's columns). Settings default to the search config's (batch size,
BPTT, dropout, optimizer) and take ``key=value`` overrides (``epochs=1 max_steps=50``).

A run trains in one process without intermediate checkpoints (a killed run starts again); its
result is written to ``retrain/c0_s<seed>/result.json``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas import optim
from jaxnas.data.text import batchify, window_count


def default_settings(cfg: dict) -> dict:
    s, o = cfg["space"], cfg["optimizer"]
    return {"seeds": 1, "top": 1, "epochs": 100, "batch_size": int(cfg["search"]["batch_size"]),
            "bptt": int(s["bptt"]), "dropout": float(s["dropout"]), "lr": float(o["lr"]),
            "momentum": float(o["momentum"]) if o["name"] == "sgd" else 0.0,
            "weight_decay": float(o["weight_decay"]), "grad_clip": o["clip"], "schedule": o["schedule"],
            "eval_batch": int(s["eval_streams"]), "max_steps": None, "log_every": 50}


def lm_train_step(net, opt, **apply_kwargs):
    """One truncated-BPTT weight step of the language model ``net`` (App. E: the mean token NLL of
    a window, the hidden state carried in and returned without gradient):
    ``step(params, opt_state, h, x, y, key, *args) -> (params, opt_state, h, loss)``, unjitted (a
    caller jits it or scans it over windows). ``*args`` and ``apply_kwargs`` go to ``net.apply``
    after ``x, h`` (the supernet's cell weights and ``mode``)."""
    from jaxnas.language_model import token_nll

    def step(params, opt_state, h, x, y, k, *args):
        def loss_fn(p):
            logits, h2 = net.apply({"params": p}, x, h, *args, train=True, dropout_key=k, **apply_kwargs)
            tot, n = token_nll(logits, y)
            return tot / n, h2
        (loss, h2), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, jax.lax.stop_gradient(h2), loss
    return step


def _train_run(net, data, s: dict, seed: int, progress, stop_after=None):
    from jaxnas.language_model import check_tokens, stream_loss
    from jaxnas.supernets.rnn import count_params, init_rnn_params
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
    opt_state = opt.init(params)
    H = net.space.hidden_size

    step = jax.jit(lm_train_step(net, opt))

    t0, h, losses = time.perf_counter(), jnp.zeros((B, H), jnp.float32), []
    src_j = jnp.asarray(src)
    for t in range(total):
        w = t % W
        if w == 0:
            h = jnp.zeros((B, H), jnp.float32)            # each epoch starts from a zero state
        x, y = src_j[w * L: w * L + L], src_j[w * L + 1: w * L + 1 + L]
        params, opt_state, h, loss = step(params, opt_state, h, x, y, jax.random.fold_in(key, t))
        losses.append(loss)
        if progress is not None and s["log_every"] and (t + 1) % int(s["log_every"]) == 0:
            progress.write(f"  seed {seed} step {t + 1}/{total}: train loss {float(loss):.3f}\n")
        if stop_after is not None and t + 1 >= stop_after and t + 1 < total:
            return None
    train_loss = float(np.mean(jax.device_get(losses[-W:]))) if losses else float("nan")
    if not np.isfinite(train_loss):
        raise FloatingPointError(f"retrain seed {seed}: the training loss became {train_loss}: lower lr "
                                 f"or set grad_clip")
    val = stream_loss(net, params, data.x_val, int(s["eval_batch"]), L)
    test = stream_loss(net, params, data.x_test, int(s["eval_batch"]), L)
    return params, {"seed": int(seed), "steps": total, "epochs": total / W, "train_loss": train_loss,
                    "val_loss": val["loss"], "val_perplexity": val["perplexity"],
                    "test_loss": test["loss"], "test_perplexity": test["perplexity"],
                    "param_count": count_params(params), "seconds": time.perf_counter() - t0}


def retrain_rnn(rdir: Path, cfg: dict, result: dict, s: dict, progress, stop_after=None):
    """The ``rnn`` protocol of :func:`jaxnas.retrain.retrain` (see the module docstring)."""
    from jaxnas.build import build_space, load_data
    from jaxnas.retrain import _choose_best, _mean_metrics, _say, seed_list
    from jaxnas.supernets.rnn import RNNLanguageModel
    if not 0 <= float(s["dropout"]) < 1 or int(s["bptt"]) < 1:
        raise ValueError(f"bad retrain settings: dropout={s['dropout']!r} must be in [0, 1), "
                         f"bptt={s['bptt']!r} must be >= 1")
    data = load_data(cfg)
    space = build_space(cfg, data)
    arch = space.check_arch(np.asarray(result["arch_indices"], np.int32))
    net = RNNLanguageModel(space, arch=tuple(int(a) for a in arch), dropout=float(s["dropout"]))
    runs = []
    for seed in seed_list(s):
        out = _train_run(net, data, s, seed, progress, stop_after)
        if out is None:
            return None
        _, run = out
        d = Path(rdir) / f"c0_s{seed}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "result.json").write_text(json.dumps(run, indent=1))
        runs.append(run)
    cand = {"arch": space.encode(arch), "arch_indices": arch.tolist(),
            "param_count": int(space.param_count(arch)), "runs": runs, "mean": _mean_metrics(runs)}
    best = _choose_best([cand])
    _say(progress, f"retrained {cand['arch']}: val perplexity {best['val_perplexity']:.2f}, test perplexity "
                   f"{best['test_perplexity']:.2f}, {cand['param_count']:,} parameters")
    return {"protocol": "rnn", "seeds": seed_list(s), "candidates": [cand], "best": best}
