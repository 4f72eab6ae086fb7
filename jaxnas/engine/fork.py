"""Forking a search from another run's supernet (``search.init_from=WORKDIR[:STEP]``): a shared warm-up.

A benchmark trains one supernet per seed (a weights-only search) and starts every strategy from it.
The fork takes from the source's checkpoint at STEP (default: its newest) the evaluator state
(supernet parameters, batch statistics, the weight optimizer's state and step count), the search's
step, key and evaluation count, and keeps its own fresh strategy state; it then runs its own phases
from STEP on, so a fork whose config equals the source's up to the strategy continues exactly as one
uninterrupted run of that strategy would (``tests/test_fork.py``). What the fork took is recorded in
``fork.json`` (the source, its step and the digest of the copied state) and in ``result.json``.

Refused with a message, before anything compiles: a source that is not a search work dir, a step it
has no checkpoint of, a supernet of another shape (space, channels, cells, optimizer), other data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import jax
import numpy as np

from jaxnas.core import workdir as W
from jaxnas.engine.search import state_digest
from jaxnas.models.supernets.cells import layout_of, layout_of_paths, relayout

FORK_FILE = "fork.json"


def parse_init_from(spec: str) -> tuple[Path, Optional[int]]:
    """``"runs/warm"`` -> (path, None); ``"runs/warm:200"`` -> (path, 200)."""
    path, sep, step = str(spec).rpartition(":")
    if sep and step.isdigit():
        return Path(path), int(step)
    return Path(spec), None


def _name(entry) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def named_leaves(tree) -> dict:
    """``{("opt_state", "0", "mu", ...): leaf}``: the same names for a dataclass / namedtuple field and
    the dict key orbax restores it as (also read by a restore's layout check: a checkpoint's metadata)."""
    return {tuple(_name(e) for e in p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def fork_state(spec: str, state, data_sha: Optional[str], stream=None, net=None):
    """``state`` (a fresh SearchState of this run) with the source's evaluator state, step, key and
    evaluations; returns ``(state, record)``. ``net``: this run's cell supernet, whose parameter layout
    (``space.scan_edges`` / ``scan_cells``) a source saved in the other layout is converted to."""
    import orbax.checkpoint as ocp
    src, step = parse_init_from(spec)
    how = "give search.init_from=WORKDIR[:STEP] of a finished or checkpointed search (e.g. a weights-only warm-up)"
    fp = W.read_fingerprint(src) if src.is_dir() else None
    root = (src / "checkpoints").resolve()
    if fp is None or not root.is_dir():
        raise ValueError(f"search.init_from={spec!r}: {src} is not a search work dir with checkpoints; {how}")
    if data_sha is not None and fp.get("data_sha256") not in (None, data_sha):
        raise ValueError(f"search.init_from={spec!r}: the source searched other data (data fingerprints differ); "
                         f"a fork must train on the source's data: use its data section")
    with ocp.CheckpointManager(root) as mgr:
        steps = sorted(int(s) for s in mgr.all_steps())
        step = steps[-1] if step is None and steps else step
        if step is None or step not in steps:
            raise ValueError(f"search.init_from={spec!r}: {root} has checkpoints of steps {steps}, not {step}; "
                             f"name one of them (WORKDIR:STEP)")
        raw = mgr.restore(step, args=ocp.args.StandardRestore())
    mine_layout = layout_of(net)
    if mine_layout is not None:
        theirs_layout = layout_of_paths(named_leaves(raw["evaluator"]))
        raw["evaluator"] = relayout(raw["evaluator"], net, theirs_layout, mine_layout)
    mine, theirs = named_leaves(state.evaluator), named_leaves(raw["evaluator"])
    bad = [f"{'.'.join(k)}: missing in the source" for k in mine if k not in theirs]
    bad += [f"{'.'.join(k)}: only in the source" for k in theirs if k not in mine]
    for k, leaf in mine.items():
        if k in theirs:
            a = np.asarray(jax.random.key_data(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
                           else leaf)
            b = np.asarray(theirs[k])
            if a.shape != b.shape or a.dtype != b.dtype:
                bad.append(f"{'.'.join(k)}: source {b.dtype}{list(b.shape)}, this run {a.dtype}{list(a.shape)}")
    if bad:
        shown = "\n  ".join(bad[:12]) + (f"\n  ... and {len(bad) - 12} more" if len(bad) > 12 else "")
        raise ValueError(f"search.init_from={spec!r}: the source's supernet state does not fit this run's "
                         f"(another space, channels, cells, ops or weight optimizer?):\n  {shown}\n"
                         f"fork only from a search with the same space, evaluator and optimizer sections")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state.evaluator)
    new_leaves = []
    for p, leaf in leaves:
        v = theirs[tuple(_name(e) for e in p)]
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            v = jax.random.wrap_key_data(v)
        new_leaves.append(jax.numpy.asarray(v))
    evaluator = jax.tree_util.tree_unflatten(treedef, new_leaves)
    key = raw["key"]
    key = jax.random.wrap_key_data(np.asarray(key)) if not jax.dtypes.issubdtype(
        getattr(key, "dtype", np.uint32), jax.dtypes.prng_key) else key
    state = state.replace(evaluator=evaluator, step=jax.numpy.asarray(raw["step"], state.step.dtype),
                          key=key, evaluations=jax.numpy.asarray(raw["evaluations"], state.evaluations.dtype))
    record = {"source": str(src.resolve()), "step": int(step), "evaluator_digest": state_digest(evaluator),
              "source_config_sha256": fp.get("config_sha256")}
    W.progress_line(stream, f"forked from {src} at step {step} (supernet and weight optimizer; fresh strategy)")
    return state, record
