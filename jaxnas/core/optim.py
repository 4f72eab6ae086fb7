"""The one optax factory of jaxnas: supernet weights, policy logits, architecture parameters and
stand-alone training all build their optimizer here, so every knob has one name and one meaning.

``weight_decay_mode``: ``"coupled"`` adds ``weight_decay * param`` to the gradient before Adam
(PyTorch's ``Adam(weight_decay=...)``, what DARTS and AdvantageNAS App. D use on the architecture),
``"decoupled"`` is AdamW (decay applied next to the Adam step). For SGD both are L2 on the gradient.
"""
from __future__ import annotations

from typing import Optional

import optax

SCHEDULES = ("constant", "cosine")
NAMES = ("adam", "sgd")


def learning_rate(lr: float, schedule: str = "constant", total_steps: Optional[int] = None, *,
                  what: str = "optimizer", key: str = "schedule"):
    """A float or an optax schedule (cosine decays to 0 over ``total_steps``). ``what`` and ``key``
    name the optimizer and its schedule option in error messages."""
    if schedule not in SCHEDULES:
        raise ValueError(f"{what}: {key} must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "constant":
        return float(lr)
    if total_steps is None or int(total_steps) < 1:
        raise ValueError(f"{what}: {key}='cosine' decays over total_steps, which must be >= 1 (in a "
                         f"search the engine passes the step count), got {total_steps}")
    return optax.cosine_decay_schedule(float(lr), int(total_steps))


def lr_at(lr: float, schedule: str = "constant", total_steps: Optional[int] = None):
    """``step -> learning rate`` (traceable), for methods that need the current rate (DARTS xi)."""
    sched = learning_rate(lr, schedule, total_steps)
    return sched if callable(sched) else (lambda step: sched)


def make_optimizer(name: str = "adam", lr: float = 1e-3, *, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8, momentum: float = 0.0, nesterov: bool = False,
                   weight_decay: float = 0.0, weight_decay_mode: str = "coupled",
                   clip: Optional[float] = None, schedule: str = "constant",
                   total_steps: Optional[int] = None, what: str = "optimizer",
                   schedule_key: str = "schedule") -> optax.GradientTransformation:
    """``clip`` (global norm) -> weight decay -> Adam / SGD -> learning rate (schedule).

    ``what`` names the optimizer in error messages (e.g. ``"strategy 'darts'"``), ``schedule_key``
    its schedule option."""
    if name not in NAMES:
        raise ValueError(f"{what}: optimizer name must be one of {NAMES}, got {name!r}")
    if not lr > 0:
        raise ValueError(f"{what}: lr must be > 0, got {lr}")
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"{what}: Adam betas must lie in [0, 1), got b1={b1}, b2={b2}")
    if not eps > 0:
        raise ValueError(f"{what}: eps must be > 0, got {eps}")
    if weight_decay < 0:
        raise ValueError(f"{what}: weight_decay must be >= 0, got {weight_decay}")
    if weight_decay_mode not in ("coupled", "decoupled"):
        raise ValueError(f"{what}: weight_decay_mode must be 'coupled' (L2 in the gradient, PyTorch "
                         f"Adam) or 'decoupled' (AdamW), got {weight_decay_mode!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"{what}: clip (global-norm gradient clipping) must be > 0 or None, got {clip}")
    rate = learning_rate(lr, schedule, total_steps, what=what, key=schedule_key)
    parts = []
    if clip is not None:
        parts.append(optax.clip_by_global_norm(float(clip)))
    decoupled = name == "adam" and weight_decay_mode == "decoupled"
    if weight_decay and not decoupled:
        parts.append(optax.add_decayed_weights(float(weight_decay)))
    if name == "adam":
        parts.append(optax.scale_by_adam(b1=float(b1), b2=float(b2), eps=float(eps)))
        if weight_decay and decoupled:
            parts.append(optax.add_decayed_weights(float(weight_decay)))
    elif momentum:
        parts.append(optax.trace(decay=float(momentum), nesterov=bool(nesterov)))
    parts.append(optax.scale_by_learning_rate(rate))
    return optax.chain(*parts)
