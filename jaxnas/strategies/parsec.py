"""PARSEC (Casale, Gordon, Fusi 2019) as the AdvantageNAS paper runs it (App. C: 8 MC samples).

PARSEC fits the architecture distribution by Monte-Carlo empirical Bayes: with samples
``a_k ~ p_theta`` (k = 1..S) and their likelihoods, the gradient of the log marginal likelihood is
estimated with self-normalised importance weights,

    delta = sum_k w_k grad_theta log p_theta(a_k),    w_k = softmax_k(r(a_k) / temperature),

i.e. the likelihood of a sample is taken as ``exp(reward / temperature)``.

Against the PARSEC paper (Casale et al. 2019): its likelihood is that of the whole minibatch,
p(y | X, v, a) = prod over the |V| examples, so for a reward that is a mean over the batch (-mean
loss, as the engine's) the paper's weights are ``temperature = 1 / |V|``; the strategy sees only the
mean and not |V|, so ``temperature`` keeps its default 1 (the AdvantageNAS code's softmax over the
raw rewards) and a config should set ``1 / batch_size`` for the paper's likelihood. Measured on the
AdvantageNAS toy (bench/results/advantage_toy.json "parsec_ablation", 10 trials, 4000 evaluations):
T = 1 leaves the weights near uniform and the argmax has 5% of the edges right at the end; T = 1/|V|
has 90% (1 trial of 10 fully right). The paper draws its samples in one step on the same weights and
batch (``accumulate=False``); the default keeps the AdvantageNAS code's one sample per step
(``accumulate=True``), one evaluation per step like the other methods: at equal evaluations the two
gave the same result on the toy (90% of edges, 1 of 10 trials).

``accumulate=True`` (default, as the authors' implementation) evaluates one sample per step, keeps
it in a buffer and updates theta every S-th sample, so one step costs one sparse evaluation like the
other methods. ``accumulate=False`` evaluates all S samples in one step, sequentially (``lax.map``:
no vmap over a sparse supernet).

P lanes. Accumulate mode: the P samples of a step (those with a finite reward, in lane order) enter
the buffer together, and theta is updated once the buffer holds S samples. When S is not a multiple
of P the step that fills the buffer has more samples than room: the ones that do not fit are
dropped (they were evaluated, and count in ``evaluations`` and process best, but enter no estimate,
since after the update they are no longer samples of the current policy); with P > S only the first
S finite samples of every step are used. Choose S a multiple of P to use every sample. Batch mode:
every lane evaluates its own S samples and the lanes' estimates are averaged (S*P samples a step).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxnas.spaces.base import NEG_INF, Space
from jaxnas.strategies import categorical as K
from jaxnas.strategies import policy as P
from jaxnas.strategies.base import Strategy, register


def importance_estimate(logits, archs, rewards, mask, temperature: float = 1.0):
    """``sum_k softmax(r / T)_k (a_k - mu)`` for samples ``archs int[S, D]``, ``rewards float[S]``."""
    w = jax.nn.softmax(rewards / temperature)
    scores = jax.vmap(lambda a: K.score(logits, a, mask))(archs)
    return jnp.tensordot(w, scores, axes=1)


@register("parsec")
def make_parsec(space: Space, *, axis_name: Optional[str] = None,
                total_steps: Optional[int] = None, num_samples: int = 8, temperature: float = 1.0,
                accumulate: bool = True, final: str = "argmax", optimizer: str = "adam",
                lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.0, clip: Optional[float] = None,
                lr_schedule: str = "constant") -> Strategy:
    """PARSEC. num_samples: MC samples per update (8, App. C); temperature: likelihood scale of
    the reward; accumulate: one sample per step and lane (True) or all per step (False); final,
    optimizer options as for REINFORCE."""
    S = int(num_samples)
    if S < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    opt = K.make_optimizer("parsec", optimizer=optimizer, lr=lr, b1=b1, b2=b2, eps=eps,
                           weight_decay=weight_decay, clip=clip, lr_schedule=lr_schedule,
                           total_steps=total_steps)
    mask = space.mask
    D = space.num_decisions

    def extra_init():
        return {"archs": jnp.zeros((S, D), jnp.int32), "rewards": jnp.zeros((S,), jnp.float32),
                "count": jnp.zeros((), jnp.int32)}

    def step_accumulate(state, key, reward_fn, ctx):
        arch = space.sample(key, state.logits)
        reward, _ = reward_fn(space.one_hot(arch))
        ok = K.finite(reward)
        r = jnp.where(ok, reward, 0.0).astype(jnp.float32)
        archs_p, r_p, ok_p = K.lane_gather((arch, r, ok), axis_name)   # the step's P samples
        ex = state.extra
        pos = ex["count"] + jnp.cumsum(ok_p.astype(jnp.int32)) - 1    # buffer slot, lane order
        fits = ok_p & (pos < S)
        slot = jnp.where(fits, pos, S)                                 # S: out of range, dropped
        archs = ex["archs"].at[slot].set(archs_p, mode="drop")
        rewards = ex["rewards"].at[slot].set(r_p, mode="drop")
        c = ex["count"] + jnp.sum(fits, dtype=jnp.int32)
        full = c == S
        delta = importance_estimate(state.logits, archs, rewards, mask, temperature)
        logits, opt_state = K.ascend(opt, state.logits, state.opt_state, delta, full, mask=mask,
                                     fill=NEG_INF)                     # theta fixed while sampling
        new = state.replace(logits=logits, opt_state=opt_state, step=state.step + 1,
                            extra={"archs": archs, "rewards": rewards,
                                   "count": jnp.where(full, 0, c)})
        new = P.track_best(new, arch, reward, ok, axis_name)
        return new, K.step_metrics(reward, ~ok, K.softmax(new.logits, mask), 1.0, updated=full)

    def step_batch(state, key, reward_fn, ctx):
        archs = space.sample(key, state.logits, shape=(S,))
        rewards = jax.lax.map(lambda a: reward_fn(space.one_hot(a))[0], archs)
        ok = K.finite(rewards)
        delta = importance_estimate(state.logits, archs, rewards.astype(jnp.float32), mask,
                                    temperature)
        new, n_ok = P.update(state, delta, ok, opt, mask, axis_name)
        best = jnp.argmax(jnp.where(jnp.isfinite(rewards), rewards, -jnp.inf))
        new = P.track_best(new.replace(step=state.step + 1), archs[best], rewards[best], True,
                           axis_name)
        return new, K.step_metrics(jnp.mean(rewards), ~ok, K.softmax(new.logits, mask), float(S),
                                   updated=n_ok > 0)

    return P.build_policy_strategy("parsec", space, step_accumulate if accumulate else step_batch,
                                   opt, final, extra_init)
