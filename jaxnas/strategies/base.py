"""The strategy protocol: a search method as pure functions over a pytree state.

A strategy is built for one space and one config by ``make(name, space, *, axis_name=None,
total_steps=None, **options)`` and exposes

- ``init(key) -> state``
- ``sample(state, key) -> (arch int32[D], weights float[D, K])``: what the weight step trains.
- ``step(state, key, reward_fn, ctx=None) -> (state, metrics)``: one architecture update. ``reward_fn(weights)
  -> (reward, aux)`` closes over the supernet parameters and a validation batch (higher is better).
  A strategy calls it once, under ``jax.grad``, or several times (``lax.map``).
- ``derive(state) -> arch int32[D]``: the final architecture (``space.derive`` of the scores, or the
  process best).
- ``probs(state) -> float[D, K]``: the current per-decision distribution (for reports).

``mode`` says which supernet mode the weights are meant for: ``"sparse"`` (one op per decision,
``lax.switch``) or ``"dense"`` (weighted sum of every op). ``needs`` says what ``step`` does with
``reward_fn``: ``"reward"`` (evaluates it only), ``"gradient"`` (differentiates it w.r.t. the
weights), ``"unroll"`` (also needs ``ctx=SupernetContext`` for an unrolled weight step) or ``"batch"``
(``reward_fn`` is *batched*: ``weights [N, D, K] -> (rewards [N], aux with leading N)``, vmapped in
bounded chunks by the evaluator, and ``ctx=BatchContext`` lets the strategy score other batches; for
Shapley-NAS's masked supernets). Only "unroll" and "batch" strategies get a ctx, the others get
``ctx=None``. ``phases`` is an optional default schedule,
``phases(steps, warmup_steps) -> [(kind, n), ...]`` with kinds ``weights | strategy | both``
(MANAS-LS, App. B.1, scores frozen weights), used when the config gives no ``search.phases``.

Population axis. ``axis_name`` names the axis of a step with P samples (devices of ``shard_map`` or
lanes of ``vmap``): every lane calls ``step`` with its own key and reward_fn, the strategy reduces its
estimate over the lanes with collectives and every lane applies the same update, so the returned
state is identical on all lanes (see ``categorical.py``). ``metrics`` are per-lane scalars the engine
averages over lanes (it sums ``evaluations``); every step returns ``reward``, ``nonfinite``,
``entropy`` and ``evaluations``. ``total_steps`` is the number of strategy steps the engine runs
(None when a strategy is used by hand; the methods that need it raise).

All functions are jit-able; the state is a pytree (``flax.struct.dataclass``); randomness comes only
from the keys passed in.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, NamedTuple, Optional

import jax

from jaxnas.core import schema as S
from jaxnas.spaces.base import Space

RewardFn = Callable[[jax.Array], tuple[jax.Array, Any]]
NEEDS = ("reward", "gradient", "unroll", "batch")


class SupernetContext(NamedTuple):
    """What a strategy needs beyond ``reward_fn`` when it differentiates through the weight step
    (DARTS second order, eq. 7 of Liu et al.). The search loop passes one as ``ctx=`` to the
    strategies with ``needs="unroll"`` (the others get ``ctx=None``).

    params: the supernet parameters; train_loss(params, weights) -> scalar on this lane's training
    batch; val_reward(params, weights) -> (reward, aux) on this lane's validation batch (reward_fn is
    ``partial(val_reward, params)``); weight_lr: the learning rate of the weight optimizer at the
    current step (a float or a traced scalar).
    """
    params: Any
    train_loss: Callable[[Any, jax.Array], jax.Array]
    val_reward: Callable[[Any, jax.Array], tuple[jax.Array, Any]]
    weight_lr: Any


class BatchContext(NamedTuple):
    """What the search loop passes as ``ctx=`` to strategies with ``needs="batch"``: ``batch`` is this
    lane's validation batch (the one ``reward_fn`` scores) and ``reward_on(batch)`` the batched reward
    function on any batch of the same structure (e.g. a slice of ``batch``: one fresh batch per
    Shapley permutation)."""
    batch: Any
    reward_on: Callable[[Any], Callable[[jax.Array], tuple[jax.Array, Any]]]


@dataclasses.dataclass(frozen=True)
class Strategy:
    name: str
    space: Space
    mode: str
    init: Callable[[jax.Array], Any]
    sample: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]
    step: Callable[..., tuple[Any, dict]]  # (state, key, reward_fn, ctx=None)
    derive: Callable[[Any], jax.Array]
    probs: Callable[[Any], jax.Array]
    needs: str = "reward"
    phases: Optional[Callable[[int, int], Any]] = None
    # optional, host-side: (state, derived arch) -> dict of how the policy stands behind the final
    # choice (TabNAS: P(arch | V), Alg. 3 candidates, the mode, warnings); result.json["policy"]
    summary: Optional[Callable[[Any, Any], dict]] = None

    def __post_init__(self):
        if self.mode not in ("sparse", "dense"):
            raise ValueError(f"strategy {self.name!r}: mode must be 'sparse' or 'dense', got {self.mode!r}")
        if self.needs not in NEEDS:
            raise ValueError(f"strategy {self.name!r}: needs must be one of {NEEDS}, got {self.needs!r}")


_REGISTRY: dict[str, Callable[..., Strategy]] = {}


def register(name: str):
    """Decorator: ``@register("reinforce") def make(space, *, axis_name=None, total_steps=None,
    **options) -> Strategy``. Every factory accepts ``axis_name`` and ``total_steps``."""
    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"strategy {name!r} registered twice")
        params = inspect.signature(fn).parameters
        missing = [p for p in ("axis_name", "total_steps") if p not in params]
        if missing:
            raise TypeError(f"strategy {name!r}: the factory must accept {missing}")
        _REGISTRY[name] = fn
        return fn
    return deco


def available() -> list[str]:
    return sorted(_REGISTRY)


def factory(name: str) -> Callable[..., Strategy]:
    """The registered factory of strategy ``name`` (its signature holds the options and defaults)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def defaults_used(name: str, given: dict) -> dict:
    """The options of strategy ``name`` that ``given`` leaves at the factory's defaults, with those
    defaults (JSON-plain): recorded with a run, so a resume after a default changed is refused."""
    out = {}
    for k, p in inspect.signature(factory(name)).parameters.items():
        if k in given or k in ("space", "axis_name", "total_steps") or p.default is inspect.Parameter.empty:
            continue
        v = p.default
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


# ---- option types: one name, one meaning, one (type, range) for every strategy -------------------
_UNIT = dict(ge=0, lt=1)
OPTION_FIELDS: dict[str, S.Field] = {
    # the optimizer on the scores (categorical.make_optimizer)
    "optimizer": S.Choice("adam", "sgd"),
    "lr": S.Float(gt=0),
    "b1": S.Float(**_UNIT),
    "b2": S.Float(**_UNIT),
    "eps": S.Float(gt=0),
    "weight_decay": S.Float(ge=0),
    "clip": S.Optional(S.Float(gt=0)),
    "lr_schedule": S.Choice("constant", "cosine"),
    # policy strategies
    "decay": S.Float(**_UNIT),                    # weight of the old value in a moving average
    "baseline": S.Bool(),
    "final": S.Str(),                             # each strategy's own rules (categorical.check_final)
    "zero_op": S.Optional(S.Str()),               # an op of the space (checked by the strategy)
    "estimator": S.Choice("taylor", "exact"),
    "num_samples": S.Int(ge=1),
    "temperature": S.Float(gt=0),
    "accumulate": S.Bool(),
    "buffer_size": S.Int(ge=1),
    # TabNAS and the reward-shaping baselines
    "budget": S.Optional(S.Float(gt=0) | S.Object("a jaxnas.strategies.budget.Budget")),
    "target": S.Optional(S.Float(gt=0)),
    "beta": S.Float(),
    "cost_fn": S.Optional(S.Object("a callable (architectures -> cost)", test=callable)),
    "cost_terms": S.Anything(),
    "pv": S.Choice("mc", "exact"),
    "num_mc_samples": S.Int(ge=1),
    "mc_chunk": S.Int(ge=1),
    "warmup_frac": S.Float(**_UNIT),
    "q_offset": S.Float(),
    "num_final_samples": S.Int(ge=1),
    "num_final_archs": S.Int(ge=1),
    "log_exact_pv": S.Optional(S.Bool()),
    # gradient strategies
    "init_std": S.Float(ge=0),
    "init_value": S.Float(ge=0, le=1),
    "derive_exclude": S.List(S.Str()),
    "xi": S.Optional(S.Float(ge=0)),
    "unroll": S.Choice("exact", "finite_difference"),
    "tau_max": S.Float(gt=0),
    "tau_min": S.Float(gt=0),
    "tau0": S.Float(gt=0),
    "tau_floor": S.Float(gt=0),
    "box": S.Choice("clip", "rescale"),
    "mode": S.Choice("sparse", "dense"),
    # Shapley-NAS (jaxnas/strategies/shapley.py)
    "eta": S.Optional(S.Float(ge=0, le=1)),       # Alg. 1 early-truncation threshold (None: off)
    "value": S.Choice("accuracy", "reward"),      # V(S): the aux accuracy or the evaluator's reward
    "subtract_std": S.Bool(),
    "normalize": S.Choice("l2", "zscore"),
    "every": S.Int(ge=1),                         # strategy steps between estimates
    "fresh_batch": S.Bool(),
    "prefix_chunk": S.Int(ge=1),
    "packed": S.Bool(),
    # MANAS (jaxnas/strategies/manas.py; its lr is EXP3's eta, the learning rate of exponential weights)
    "credit": S.Choice("coordinated", "linear"),
    "sampler": S.Choice("softmax", "zipf"),
    "explore": S.Optional(S.Float(ge=0, le=1)),   # EXP3's uniform mixing (its gamma)
    "collect_steps": S.Optional(S.Int(ge=1)),      # least-squares rows collected per solve
    "train_steps": S.Optional(S.Int(ge=1)),        # weight steps per MANAS-LS round
    # MA2ML (jaxnas/strategies/ma2ml.py)
    "on_policy": S.Bool(),
    "kl_weight": S.Float(ge=0),                   # lambda of J = E[Q - lambda KL(pi || rho)]
    "min_buffer": S.Int(ge=1),
    "critic_hidden": S.Int(ge=1),
    "critic_lr": S.Float(gt=0),
    "critic_steps": S.Int(ge=1),
    "critic_batch": S.Int(ge=1),
    "policy_steps": S.Int(ge=1),
    "cf_exact_max": S.Int(ge=1),
}


def check_options(name: str, given: dict, prefix: str = "") -> list[str]:
    """Problems of strategy ``name``'s options ``given`` (an unknown name or option, a value of the wrong
    type or range, from :data:`OPTION_FIELDS`), one line each, keys as ``prefix + option``.
    Space-dependent checks (op names, feasible budgets) happen when the strategy is built."""
    if name not in _REGISTRY:
        return [f"{prefix}name: unknown strategy {name!r}; available: {', '.join(available())}"]
    valid = options(name)
    problems = []
    unknown = [k for k in given if k not in valid]
    if unknown:
        problems.append(f"{', '.join(prefix + k for k in unknown)}: not option(s) of strategy {name!r}; "
                        f"its options are: {', '.join(valid)}")
    # None where the strategy's own default is None means "derive it" (MANAS's EXP3 rates): always valid
    params = inspect.signature(_REGISTRY[name]).parameters
    typed = {k: v for k, v in given.items()
             if k in valid and not (v is None and params[k].default is None)}
    _, bad = S.check(OPTION_FIELDS, typed, prefix)
    return problems + bad


def options(name: str) -> list[str]:
    """The options of strategy ``name`` (besides ``space``, ``axis_name`` and ``total_steps``)."""
    return [p for p in inspect.signature(_REGISTRY[name]).parameters
            if p not in ("space", "axis_name", "total_steps")]



def make(name: str, space: Space, *, axis_name: Optional[str] = None,
         total_steps: Optional[int] = None, **config) -> Strategy:
    """Builds the registered strategy ``name`` for ``space``; unknown names and options raise.

    axis_name: the population axis (None: one lane). total_steps: the number of strategy steps the
    engine will run (None when unknown; methods that need it raise)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; available: {', '.join(available())}")
    fn = _REGISTRY[name]
    try:
        inspect.signature(fn).bind(space, axis_name=axis_name, total_steps=total_steps, **config)
    except TypeError as e:  # an unexpected or missing keyword: name it and the ones that exist
        raise ValueError(f"strategy {name!r}: {e}; its options are: {', '.join(options(name))}") from None
    S.raise_if(check_options(name, config), f"options of strategy {name!r}")
    return fn(space, axis_name=axis_name, total_steps=total_steps, **config)
