"""A synthetic ML-pipeline game with a known optimum and real interactions between agents (MA2ML).

Three agents of a :class:`~jaxnas.spaces.product.ProductSpace`:

- ``nas``: a NAS-Bench-201 cell without the 'none' op (4^6 = 4,096 cells); its accuracy ``acc`` is the
  benchmark's 12-epoch CIFAR-10 validation accuracy (``cifar10_valid_12ep / 100``) when the table is
  given, else a fixed random function of the cell (additive + pairwise edge effects, in [0.3, 0.9]);
  its size ``s`` in [0, 1] is its parameter count, min-max scaled over the cells;
- ``hpo``: learning rate x weight decay (3 x 3 grid);
- ``aug``: augmentation magnitude x probability (3 x 3 grid).

Reward ``R = acc * (0.55 + 0.45 f_lr f_reg)``: the architecture's accuracy modulated by a response
to the hyper-parameters and the augmentation that depends on the architecture:

- ``f_lr = exp(-(l - 2 (1 - s))^2 / (2 * 0.6^2))``, ``l`` the learning-rate index: larger cells want
  smaller learning rates (HPO x NAS);
- ``f_reg = exp(-(reg - (0.2 + 0.6 s))^2 / (2 * 0.15^2))`` with ``reg = 0.6 a + 0.4 w``, ``a`` the
  augmentation strength (mean of the magnitude and probability indices / 2) and ``w`` the weight-decay
  index / 2: the total regularisation must match the cell's size (AUG x HPO x NAS).

So no agent's best action is independent of the others'. The 331,776 joint rewards are enumerated
(``all_rewards``) for the optimum. ``reward_fn(weights)`` is the strategies' ``reward_fn`` (the
argmax of ``weights`` is the pipeline), jit-able and vmappable, like the table evaluator's.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.benchmarks.nb201 import NasBench201Table
from jaxnas.spaces.base import Space
from jaxnas.spaces.cells import NasBench201Space
from jaxnas.spaces.product import HPOSpace, ProductSpace

GAME_OPS = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
LRS, WDS = (0.02, 0.1, 0.5), (0.0, 5e-4, 5e-3)
MAGNITUDES, PROBS = (1.0, 5.0, 9.0), (0.2, 0.5, 0.8)


def _synthetic_accuracy(space: NasBench201Space, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    archs = space.all_archs()
    D, K = space.shape
    unary = rng.normal(0, 1, (D, K))
    pair = rng.normal(0, 0.5, (D, D, K, K))
    v = unary[np.arange(D), archs].sum(-1)
    for i in range(D):
        for j in range(i + 1, D):
            v += pair[i, j, archs[:, i], archs[:, j]]
    v = (v - v.min()) / (v.max() - v.min())
    return (0.3 + 0.6 * v).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class PipelineGame:
    space: ProductSpace
    acc: np.ndarray            # float32[4096]: accuracy of every cell (NAS sub-space id order)
    size: np.ndarray           # float32[4096]: parameter count, min-max scaled
    source: str                # "nb201 table <path>" or "synthetic (seed ...)"

    @classmethod
    def create(cls, table_path: Optional[str] = None, seed: int = 0) -> "PipelineGame":
        nas = NasBench201Space.create(ops=GAME_OPS)
        hpo = HPOSpace.create({"lr": LRS, "weight_decay": WDS})
        aug = HPOSpace.create({"magnitude": MAGNITUDES, "probability": PROBS})
        space = ProductSpace.create([("aug", aug), ("nas", nas), ("hpo", hpo)], nas="nas")
        if table_path is not None and Path(table_path).exists():
            acc = NasBench201Table.load(table_path).values_for(nas, "cifar10_valid_12ep") / 100.0
            source = f"nb201 table {table_path} (cifar10_valid_12ep)"
        else:
            acc = _synthetic_accuracy(nas, seed)
            source = f"synthetic accuracy (seed {seed})"
        params = np.asarray(nas.param_count(nas.all_archs()), np.float64)
        size = (params - params.min()) / (params.max() - params.min())
        return cls(space=space, acc=np.asarray(acc, np.float32), size=size.astype(np.float32), source=source)

    def _ids(self, nas_arch):
        nas = self.space.sub("nas")
        radix = np.array([int(np.prod(nas.num_choices[d + 1:])) for d in range(nas.num_decisions)])
        return jnp.sum(jnp.asarray(nas_arch, jnp.int32) * jnp.asarray(radix, jnp.int32), -1)

    def reward(self, arch, acc=None, size=None) -> jax.Array:
        """``R`` of pipelines ``int[..., D]`` (traceable; ``acc``/``size``: device copies of the tables)."""
        arch = jnp.asarray(arch)
        acc = jnp.asarray(self.acc) if acc is None else acc
        size = jnp.asarray(self.size) if size is None else size
        i = self._ids(self.space.split(arch, "nas"))
        a_, s = acc[i], size[i]
        aug, hpo = self.space.split(arch, "aug").astype(jnp.float32), self.space.split(arch, "hpo").astype(jnp.float32)
        f_lr = jnp.exp(-(hpo[..., 0] - 2.0 * (1.0 - s)) ** 2 / (2 * 0.6 ** 2))
        reg = 0.6 * (aug[..., 0] + aug[..., 1]) / 4.0 + 0.4 * hpo[..., 1] / 2.0
        f_reg = jnp.exp(-(reg - (0.2 + 0.6 * s)) ** 2 / (2 * 0.15 ** 2))
        return a_ * (0.55 + 0.45 * f_lr * f_reg)

    def reward_fn(self, weights):
        """A strategy's ``reward_fn``: ``(R, aux)`` of the pipeline ``argmax(weights)``."""
        arch = jnp.argmax(weights, -1).astype(jnp.int32)
        return self.reward(arch), {"arch": arch}

    def all_rewards(self) -> np.ndarray:
        """``float32[num_archs]`` in the product space's id order (enumerated)."""
        archs = self.space.all_archs()
        return np.concatenate([np.asarray(jax.jit(self.reward)(archs[i:i + 65536]))
                               for i in range(0, len(archs), 65536)])

    def optimum(self) -> tuple[float, np.ndarray]:
        r = self.all_rewards()
        i = int(np.argmax(r))
        return float(r[i]), self.space.id_to_arch(i)


def joint_space(space: Space) -> Space:
    """One decision over every joint action of ``space`` (choice j = ``space.id_to_arch(j)``): the
    single agent that controls all modules (poster, Fig. 1 left)."""
    return Space(("joint",), (tuple(str(i) for i in range(space.num_archs)),))
