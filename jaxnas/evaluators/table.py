"""Rewards looked up in a benchmark table: NAS-Bench-201 (every one of its 15,625 cells trained).

No supernet and no data: ``reward_fn(weights)`` takes the architecture ``argmax(weights)`` and returns
``scale * table[reward column]`` for it, a gather from a device array ordered by the space's
architecture id, so it runs under ``vmap`` over lanes and over samples. The default reward is the
12-epoch CIFAR-10 validation accuracy (``cifar10_valid_12ep``), the low-fidelity reward
NAS-Bench-201 gives its RL and random-search baselines; ``result`` reports the 200-epoch test
accuracies of CIFAR-10, CIFAR-100 and ImageNet16-120 of the derived cell, and its rank. The search
loop counts reward evaluations: a table search's budget is a number of queries.

The table is a CSV(.gz) with the columns of ``jaxnas.benchmarks.nb201`` (``evaluator.path``; any
file with the same columns works).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.benchmarks.nb201 import NB201_TABLE_OPS, NasBench201Table
from jaxnas.core import schema as S
from jaxnas.evaluators.base import register

# the config keys of ``evaluator`` for this name: type, range and default (jaxnas.core.schema)
SCHEMA = {
    "path": S.Optional(S.Path()),                # the table CSV(.gz) (required)
    "reward": S.Str("cifar10_valid_12ep"),       # the column the strategy learns from
    "scale": S.Float(0.01, gt=0),                # reward = scale * column (accuracies in % -> [0, 1])
    "report": S.List(S.Str(), ("cifar10_test", "cifar100_test", "imagenet16_test")),  # result columns
}
DEFAULTS = S.defaults(SCHEMA)


def arch_ids(space, archs) -> jax.Array:
    """Mixed-radix ids (``Space.arch_to_id``, traceable) of ``int[..., D]`` architectures."""
    radix = np.array([int(np.prod(space.num_choices[d + 1:])) for d in range(space.num_decisions)])
    return jnp.sum(jnp.asarray(archs, jnp.int32) * jnp.asarray(radix, jnp.int32), -1)


@dataclasses.dataclass(frozen=True, eq=False)
class TableEvaluator:
    space: Any
    table: NasBench201Table
    column: str
    scale: float
    report: tuple
    values: np.ndarray              # float32[num_archs]: the reward column in space-id order
    name: str = "table"
    has_weights: bool = False
    differentiable: bool = False
    needs_batches: bool = False
    max_lane_batch: int = 1 << 20

    def init(self, key):
        del key
        return {}

    def inputs(self):
        return {"values": jnp.asarray(self.values)}

    def reward_fn(self, state, inputs, batch, key):
        del state, batch, key

        def f(weights):
            arch = jnp.argmax(weights, -1).astype(jnp.int32)
            r = inputs["values"][arch_ids(self.space, arch)]
            return r, {"arch": arch}
        return f

    def weight_step(self, *a, **k):
        raise ValueError("the table evaluator has no weights to train")

    def context(self, *a, **k):
        raise ValueError("the table evaluator has no weight step to unroll")

    def result(self, state, arch) -> dict:
        row = self.table.lookup(self.space.encode(np.asarray(arch)))
        out = {"table": self.table.path, "table_index": row["index"], "reward_column": self.column,
               self.column: row[self.column], "table_report": list(self.report)}
        for c in self.report:
            out[c] = row[c]
            out[f"{c}_rank"] = self.table.rank(row["arch"], c)
            out[f"{c}_best"] = float(np.nanmax(self.table.columns[c]))
        return out


@register("table", SCHEMA, needs_data=False, has_weights=False)
def make(options: dict, *, cfg: dict, space, data=None, task=None, axis_name=None,
         **_) -> TableEvaluator:
    if not options["path"]:
        raise ValueError("evaluator.name='table' needs evaluator.path: the NAS-Bench-201 accuracy CSV(.gz) "
                         "(columns index, arch, cifar10_valid_12ep, cifar10_test, ...)")
    if getattr(space, "op_set", None) != "nb201" or getattr(space, "num_blocks", 0) != 1 \
            or set(space.ops) != set(NB201_TABLE_OPS):
        raise ValueError("the table evaluator looks cells up in NAS-Bench-201: use space.name='nb201' with "
                         "its 5 ops and one shared cell (unique_cells=False)")
    table = NasBench201Table.load(options["path"])
    column = options["reward"]
    report = tuple(options["report"])
    for c in (column, *report):
        if c not in table.columns:
            raise ValueError(f"evaluator.reward / report: no column {c!r} in {table.path}; it has "
                             f"{', '.join(table.columns)}")
    values = options["scale"] * table.values_for(space, column)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"column {column!r} of {table.path} has NaN entries; choose another reward column")
    return TableEvaluator(space=space, table=table, column=column, scale=float(options["scale"]),
                          report=report, values=values.astype(np.float32))
