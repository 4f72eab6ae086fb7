"""Stand-alone training of MLP architectures on tabular data (TabNAS App. B.2, Table 2).

The retrain step of resource-constrained NAS: train a child architecture from scratch and report its
validation logistic loss, accuracy and balanced error (mean per-class error, the metric of Kadra et
al. that TabNAS reports for every data set but Criteo).

Many architectures and seeds train at once: every *member* (one architecture, one seed) is the
max-width MLP of the space with the units past its widths masked to zero, and the whole training
(``lax.scan`` over epochs, then over the mini-batches of an epoch) is ``vmap``-ed over members. A
masked unit has zero activation and zero gradient, and Adam / SGD leave a zero-gradient parameter
untouched, so a member trains exactly the child MLP made of the leading units; its kernels are drawn
with the child's fan-in (LeCun normal, as ``flax.linen.Dense``), so it also starts like the child.

The training of one member is the pure function ``train_member`` (data arrays as arguments, so it
traces under ``jit`` / ``vmap`` / ``shard_map``): ``make_trainer`` vmaps it over members and the
``standalone`` evaluator (``jaxnas/evaluators/standalone.py``) calls it per search lane.

Adam uses eps = 1e-3 as in the paper (App. B.2: b1 0.9, b2 0.999, eps 0.001); the optimizer comes
from the shared factory ``jaxnas.core.optim.make_optimizer``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas.core import optim
from jaxnas.data import augment as A
from jaxnas.data.images import normalize, random_crop_flip
from jaxnas.models.ops.conv import Kernels
from jaxnas.models.supernets.cells import NasBench201Net
from jaxnas.spaces.cells import NasBench201Space
from jaxnas.spaces.product import AugSpace, HPOSpace, ProductSpace
from jaxnas.tasks.classification import classification_loss


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Weight-training hyper-parameters (TabNAS Table 2 columns)."""
    epochs: int = 60
    batch_size: int = 32
    lr: float = 5e-4
    schedule: str = "cosine"      # constant | cosine (decay to 0 over all steps)
    optimizer: str = "adam"       # adam | sgd
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-3
    momentum: float = 0.0         # sgd
    max_steps: Optional[int] = None  # stop early (tests); None: epochs * steps_per_epoch

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs ({self.epochs}) and batch_size ({self.batch_size}) must be >= 1")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def steps_per_epoch(self, num_train: int) -> int:
        if num_train < self.batch_size:
            raise ValueError(f"batch_size {self.batch_size} exceeds the {num_train} training examples; "
                             f"lower batch_size")
        return num_train // self.batch_size

    def total_steps(self, num_train: int) -> int:
        """Optimizer steps of one member: ``epochs * steps_per_epoch``, capped by ``max_steps``."""
        full = self.epochs * self.steps_per_epoch(num_train)
        return full if self.max_steps is None else min(int(self.max_steps), full)

    def make_optimizer(self, total_steps: int) -> optax.GradientTransformation:
        return optim.make_optimizer(self.optimizer, self.lr, b1=self.b1, b2=self.b2, eps=self.eps,
                                    momentum=self.momentum, schedule=self.schedule,
                                    total_steps=total_steps, what="stand-alone training")


def train_config_from(cfg: dict, epochs: Optional[int] = None) -> TrainConfig:
    """The stand-alone TrainConfig of a resolved jaxnas config: its ``optimizer`` and
    ``search.batch_size`` (TabNAS uses the same weight-training settings for both), ``epochs``
    (default 60)."""
    o = cfg["optimizer"]
    return TrainConfig(epochs=int(epochs or 60), batch_size=int(cfg["search"]["batch_size"]),
                       lr=float(o["lr"]), schedule=o["schedule"], optimizer=o["name"], b1=o["b1"],
                       b2=o["b2"], momentum=float(o["momentum"]) if o["name"] == "sgd" else 0.0)


# ---- masked max-width MLP ------------------------------------------------------------------------
def _layer_dims(max_widths: Sequence[int], num_inputs: int, num_outputs: int):
    dims = [int(num_inputs), *map(int, max_widths), int(num_outputs)]
    return list(zip(dims[:-1], dims[1:]))


def init_masked(key, widths, max_widths: Sequence[int], num_inputs: int, num_outputs: int) -> dict:
    """Max-width parameters whose leading ``widths`` block is a LeCun-normal init of the child:
    kernel l has the variance 1/fan_in of the child's fan-in (``widths[l-1]``), biases are 0."""
    widths = jnp.asarray(widths, jnp.float32)
    fan_ins = jnp.concatenate([jnp.full((1,), float(num_inputs)), widths])
    base = jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    params = {}
    keys = jax.random.split(key, len(max_widths) + 1)
    for l, (d_in, d_out) in enumerate(_layer_dims(max_widths, num_inputs, num_outputs)):
        k = base(keys[l], (d_in, d_out), jnp.float32) * jnp.sqrt(d_in / fan_ins[l])
        name = f"hidden{l}" if l < len(max_widths) else "logits"
        params[name] = {"kernel": k, "bias": jnp.zeros((d_out,), jnp.float32)}
    return params


def masked_apply(params: dict, x, widths, max_widths: Sequence[int]):
    """Logits of the child of hidden ``widths`` (int[L], may be traced) run as the masked max MLP."""
    h = x
    for l, maxw in enumerate(max_widths):
        p = params[f"hidden{l}"]
        mask = (jnp.arange(maxw) < widths[l]).astype(h.dtype)
        h = jax.nn.relu(h @ p["kernel"] + p["bias"]) * mask
    p = params["logits"]
    return h @ p["kernel"] + p["bias"]


def balanced_error(logits, labels, num_classes: int):
    """1 - mean over the classes present in ``labels`` of the per-class recall."""
    pred = (logits[..., 0] > 0).astype(jnp.int32) if logits.shape[-1] == 1 else jnp.argmax(logits, -1)
    classes = jnp.arange(num_classes)[:, None]
    is_c = labels[None, :] == classes                                   # [C, N]
    n_c = jnp.sum(is_c, -1)
    hit_c = jnp.sum(is_c & (pred[None, :] == labels[None, :]), -1)
    recall = jnp.where(n_c > 0, hit_c / jnp.maximum(n_c, 1), 0.0)
    return 1.0 - jnp.sum(recall) / jnp.maximum(jnp.sum(n_c > 0), 1)


def epoch_indices(key, epoch, num_train: int, batch_size: int):
    """``int32[steps_per_epoch, batch_size]``: the batches of ``epoch`` (remainder dropped)."""
    spe = num_train // batch_size
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_train)
    return perm[:spe * batch_size].reshape(spe, batch_size)


def _evaluate(params, widths, max_widths, x, y, num_classes, eval_batch: int):
    n = x.shape[0]
    nb = -(-n // eval_batch)
    pad = nb * eval_batch - n
    xp = jnp.pad(x, ((0, pad), (0, 0))).reshape(nb, eval_batch, -1)
    logits = jax.lax.map(lambda xb: masked_apply(params, xb, widths, max_widths), xp)
    logits = logits.reshape(nb * eval_batch, -1)[:n]
    loss, acc = classification_loss(logits, y)
    return {"val_loss": loss, "val_accuracy": acc, "val_balanced_error": balanced_error(logits, y, num_classes)}


def _varying_axes(x) -> set:
    """The ``shard_map`` mesh axes ``x`` varies over (empty outside ``shard_map``)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)       # jax >= 0.9
    if mat is not None:
        return set(getattr(mat, "varying", ()) or ())
    return set(getattr(aval, "vma", ()) or ())          # older jax


def _vary_like(tree, *refs):
    """Inside ``shard_map``: cast every leaf of ``tree`` to vary over the mesh axes ``refs`` vary
    over (no-op elsewhere). A member's initial biases and optimizer state are built from constants,
    so they would be *invariant* (one value shared by all devices), and ``grad`` w.r.t. an invariant
    value sums the cotangents of every device: members on different devices would share gradients."""
    axes = set().union(*(_varying_axes(r) for r in refs))
    if not axes:
        return tree

    pcast = getattr(jax.lax, "pcast", None)
    to_varying = ((lambda x, ax: pcast(x, ax, to="varying")) if pcast is not None
                  else jax.lax.pvary)                   # older jax

    def cast(x):
        missing = tuple(sorted(axes - _varying_axes(x)))
        return to_varying(x, missing) if missing else x
    return jax.tree.map(cast, tree)


def member_init(widths, key, num_inputs: int, *, max_widths: Sequence[int], num_outputs: int, tx) -> tuple:
    """``(params, opt_state)`` of one member (``key``: its seed; the init half of its split)."""
    k_init, _ = jax.random.split(key)
    params = init_masked(k_init, widths, max_widths, num_inputs, num_outputs)
    return params, tx.init(params)


def member_data_key(key):
    """The key of a member's data order (the other half of its seed's split)."""
    return jax.random.split(key)[1]


def member_step(carry, idx, x_train, y_train, widths, *, max_widths: Sequence[int], tx) -> tuple:
    """One optimizer step of one member on the rows ``idx``: ``((params, opt), loss)``. The one step
    of every MLP training: the in-search scan (``train_member``) and the checkpointed retrain
    (``train_members``)."""
    params, opt = carry

    def loss_fn(params):
        return classification_loss(masked_apply(params, x_train[idx], widths, max_widths), y_train[idx])[0]

    loss, g = jax.value_and_grad(loss_fn)(params)
    upd, opt = tx.update(g, opt, params)
    return (optax.apply_updates(params, upd), opt), loss


def train_member(widths, key, arrays, *, max_widths: Sequence[int], num_outputs: int,
                 num_classes: int, cfg: TrainConfig, eval_batch: int = 4096,
                 return_params: bool = False) -> dict:
    """Train ONE member from scratch and evaluate it: a pure, traceable function.

    ``widths``: int[L] hidden widths (may be traced), ``key``: its seed (split into init and data
    order), ``arrays``: ``(x_train, y_train, x_val, y_val)`` (float32 / int32, may be traced).
    Returns scalars ``val_loss``, ``val_accuracy``, ``val_balanced_error`` and ``train_loss`` (the
    mean loss of the last epoch). Epochs and steps are ``lax.scan``-ned; ``vmap`` it over members.
    ``return_params``: also return the trained masked max-width parameters under ``"params"``
    (``jaxnas.models.supernets.mlp.child_params`` cuts the child's out of them).
    """
    x_train, y_train, x_val, y_val = arrays
    n, num_inputs = x_train.shape
    max_widths = tuple(int(w) for w in max_widths)
    spe = cfg.steps_per_epoch(n)
    total = cfg.total_steps(n)
    epochs = -(-total // spe)
    tx = cfg.make_optimizer(total)
    k_data = member_data_key(key)
    carry = member_init(widths, key, num_inputs, max_widths=max_widths, num_outputs=num_outputs, tx=tx)
    carry = _vary_like(carry, key, widths, *arrays)  # per device (shard_map)

    def step(carry, idx_t):
        idx, t = idx_t
        new, loss = member_step(carry, idx, x_train, y_train, widths, max_widths=max_widths, tx=tx)
        live = t < total                      # the last epoch may stop early (max_steps)
        return jax.tree.map(lambda a, b: jnp.where(live, a, b), new, carry), loss

    def epoch(carry, e):
        idx = epoch_indices(k_data, e, n, cfg.batch_size)
        carry, losses = jax.lax.scan(step, carry, (idx, e * spe + jnp.arange(spe)))
        return carry, jnp.mean(losses)

    (params, _), train_losses = jax.lax.scan(epoch, carry, jnp.arange(epochs))
    out = _evaluate(params, widths, max_widths, x_val, y_val, num_classes, eval_batch)
    out["train_loss"] = train_losses[-1]
    if return_params:
        out["params"] = params
    return out


def make_trainer(x_train, y_train, x_val, y_val, max_widths: Sequence[int], num_outputs: int,
                 num_classes: int, cfg: TrainConfig, eval_batch: int = 4096, return_params: bool = False):
    """A jit-compiled ``train(widths int[M, L], keys[M]) -> {metric: float[M]}``: M members trained
    at once (``vmap`` of ``train_member``). Data arrays live on the device, shared by members, and
    enter the compiled program as arguments."""
    arrays = (jnp.asarray(x_train, jnp.float32), jnp.asarray(y_train, jnp.int32),
              jnp.asarray(x_val, jnp.float32), jnp.asarray(y_val, jnp.int32))
    member = functools.partial(train_member, max_widths=tuple(int(w) for w in max_widths),
                               num_outputs=int(num_outputs), num_classes=int(num_classes), cfg=cfg,
                               eval_batch=int(eval_batch), return_params=bool(return_params))
    compiled = jax.jit(jax.vmap(member, in_axes=(0, 0, None)))

    def train(widths, keys):
        return compiled(widths, keys, arrays)

    train.total_steps = cfg.total_steps(int(arrays[0].shape[0]))  # type: ignore[attr-defined]
    return train


def train_archs(data, space, archs, seeds: Sequence[int] = (0,), cfg: TrainConfig = TrainConfig(),
                member_batch: int = 64, eval_batch: int = 4096, progress=None,
                return_params: bool = False) -> dict:
    """Stand-alone training of every architecture in ``archs`` (int[A, L] of ``space``, an MLPSpace)
    with every seed, on ``data`` (TabularData). Returns numpy arrays ``[A, S]`` for val_loss,
    val_accuracy, val_balanced_error, train_loss, plus ``seconds`` (wall time, compile included) and
    ``total_steps`` per member. Members run ``member_batch`` at a time. ``return_params``: also
    ``params``, the trained masked max-width parameters of every member (numpy leaves ``[A, S, ...]``)."""
    archs = np.asarray(archs, np.int32).reshape(-1, space.num_layers)
    for a in archs:
        space.check_arch(a)
    widths = np.asarray(space.arch_widths(archs))                        # [A, L]
    ncls = int(data.num_classes)
    if (space.num_outputs == 1) != (ncls == 2):
        raise ValueError(f"space has {space.num_outputs} outputs but the data has {ncls} classes "
                         f"(one logit for 2 classes, else one per class)")
    train = make_trainer(data.x_train, data.y_train, data.x_val, data.y_val, space.max_widths,
                         space.num_outputs, ncls, cfg, eval_batch, return_params)
    A, S = len(archs), len(seeds)
    mw = np.repeat(widths, S, 0)                                         # member m = (a, s)
    mseeds = np.tile(np.asarray(seeds), A)
    out: dict = {}
    params_parts: list = []
    t0 = time.perf_counter()
    for i in range(0, A * S, member_batch):
        w = mw[i:i + member_batch]
        k = jax.vmap(jax.random.key)(jnp.asarray(mseeds[i:i + member_batch]))
        pad = member_batch - len(w) if A * S > member_batch else 0       # one compiled shape
        if pad:
            w = np.concatenate([w, np.repeat(w[:1], pad, 0)])
            k = jnp.concatenate([k, jnp.repeat(k[:1], pad, 0)])
        r = jax.device_get(train(jnp.asarray(w), k))
        if return_params:
            p = r.pop("params")
            params_parts.append(jax.tree.map(lambda a: np.asarray(a)[:len(w) - pad], p))
        for name, v in r.items():
            out.setdefault(name, []).append(np.asarray(v)[:len(w) - pad])
        if progress is not None:
            progress(min(i + member_batch, A * S), A * S, time.perf_counter() - t0)
    res = {name: np.concatenate(v).reshape(A, S) for name, v in out.items()}
    bad = ~np.isfinite(res["val_loss"])
    if bad.any():
        raise FloatingPointError(f"{int(bad.sum())} stand-alone runs ended with a NaN/inf loss; lower "
                                 f"the learning rate (lr={cfg.lr}) or standardise the features")
    res["seconds"] = time.perf_counter() - t0
    res["total_steps"] = int(train.total_steps)
    if return_params:
        res["params"] = jax.tree.map(lambda *a: np.concatenate(a).reshape((A, S) + a[0].shape[1:]),
                                     *params_parts)
    return res


def train_one(data, space, arch, seed: int = 0, cfg: TrainConfig = TrainConfig()) -> dict:
    """One architecture, one seed (``arch`` as int[L] or its string ``32-144-24``): floats."""
    if isinstance(arch, str):
        arch = space.decode(arch)
    r = train_archs(data, space, np.asarray(arch)[None], (seed,), cfg, member_batch=1)
    return {k: (float(v.reshape(-1)[0]) if isinstance(v, np.ndarray) else v) for k, v in r.items()}


def pareto_front(costs, losses) -> np.ndarray:
    """Indices of the points no other point beats in both cost and loss (<=, one strictly), by cost."""
    costs, losses = np.asarray(costs, float), np.asarray(losses, float)
    order = np.lexsort((losses, costs))
    front, best = [], math.inf
    for i in order:
        if losses[i] < best:
            front.append(int(i))
            best = losses[i]
    return np.asarray(front, np.int64)


# ---- image pipelines (MA2ML): augmentation x NB201 cell x hyper-parameters, trained from scratch ----
# An MA2ML pipeline (jaxnas/spaces/product.py) is trained as ONE pure function of its indices, so a
# vmap over candidates trains M pipelines in one compiled program: the cell is one-hot weights on the
# dense NAS-Bench-201 network (jaxnas/models/supernets/cells.py; every op runs, the one-hot keeps the chosen
# one: no lax.switch under vmap), the AutoAugment policy is applied to every training batch inside the
# program (jaxnas/data/augment.py), and the hyper-parameters are traced values fed to the optimizer with
# ``optax.inject_hyperparams``. Choices (documented in docs/guides/ma2ml.md): BatchNorm on batch statistics in
# training and evaluation (the dense network's non-affine BN; evaluation batches of ``eval_batch``);
# mini-batches drawn uniformly with replacement per step; SGD with Nesterov momentum (or Adam) and
# coupled weight decay, the learning rate cosine-decayed to 0 over the steps.
HPO_NAMES = ("lr", "weight_decay", "label_smoothing", "momentum")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Training of one image pipeline. ``lr``/``weight_decay``/``label_smoothing``/``momentum`` are
    the defaults where the HPO agent has no grid of that name."""
    steps: int = 200
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    momentum: float = 0.9
    optimizer: str = "sgd"        # sgd (Nesterov) | adam
    schedule: str = "cosine"      # cosine | constant
    flip: bool = False            # random horizontal flips (CIFAR); off for digits
    crop_padding: int = 0         # random crops after zero padding (CIFAR: 4)
    eval_batch: int = 500
    kernels: Kernels = Kernels()  # the network's kernel choices (jaxnas.models.ops.conv)

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.eval_batch < 1:
            raise ValueError(f"steps ({self.steps}), batch_size ({self.batch_size}) and eval_batch "
                             f"({self.eval_batch}) must be >= 1")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam' for image pipelines, got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")


def check_pipeline_space(space) -> None:
    """Errors a user can act on, before compiling: the agents an image pipeline understands."""
    if not isinstance(space, ProductSpace):
        raise ValueError(f"an image pipeline needs a ProductSpace of agents, got {type(space).__name__}")
    if not space.nas or not isinstance(space.sub(space.nas), NasBench201Space) or space.sub(space.nas).num_blocks != 1:
        raise ValueError("an image pipeline needs a NAS agent with a NAS-Bench-201 cell (one shared cell)")
    for name, sub in zip(space.agents, space.subspaces):
        if name == space.nas:
            continue
        if isinstance(sub, AugSpace):
            continue
        if isinstance(sub, HPOSpace):
            unknown = [d for d in sub.decision_names if d not in HPO_NAMES]
            if unknown:
                raise ValueError(f"agent {name!r}: unknown hyper-parameter(s) {unknown}; image pipelines "
                                 f"understand {HPO_NAMES}")
            continue
        raise ValueError(f"agent {name!r}: a {type(sub).__name__} is not an AUG (AugSpace) or HPO (HPOSpace) agent")


def pipeline_parts(space, arch, cfg: PipelineConfig):
    """``(nas one-hot weights [D_nas, K], aug policy (ops, probs, mags, op names) or None, hyper-parameters)``
    of a pipeline ``int[D]`` (traceable)."""
    nas = space.sub(space.nas)
    weights = nas.one_hot(space.split(arch, space.nas))
    aug, hp = None, {n: jnp.asarray(getattr(cfg, n), jnp.float32) for n in HPO_NAMES}
    for name, sub in zip(space.agents, space.subspaces):
        if isinstance(sub, AugSpace):
            aug = sub.policy(space.split(arch, name)) + (sub.ops,)
        elif isinstance(sub, HPOSpace):
            vals = sub.values(space.split(arch, name))
            for i, d in enumerate(sub.decision_names):
                hp[d] = vals[i]
    return weights, aug, hp


def _pipeline_tx(cfg: PipelineConfig, hp):
    def make(learning_rate, weight_decay, momentum):
        base = (optax.sgd(learning_rate, momentum=momentum, nesterov=True) if cfg.optimizer == "sgd"
                else optax.adam(learning_rate))
        return optax.chain(optax.add_decayed_weights(weight_decay), base)
    return optax.inject_hyperparams(make)(learning_rate=hp["lr"], weight_decay=hp["weight_decay"],
                                          momentum=hp["momentum"])


def pipeline_net(space, cfg: PipelineConfig) -> NasBench201Net:
    """The dense NAS-Bench-201 network every pipeline of ``space`` trains (its cell: one-hot weights)."""
    return NasBench201Net(space.sub(space.nas), kernels=cfg.kernels)


def pipeline_init(arch, key, image_shape, *, space, cfg: PipelineConfig) -> tuple:
    """``(params, opt_state)`` of one pipeline (``key``: its seed; the init half of its split)."""
    weights, _, hp = pipeline_parts(space, arch, cfg)
    k_init, _ = jax.random.split(key)
    params = pipeline_net(space, cfg).init(k_init, jnp.zeros((1,) + tuple(image_shape), jnp.float32), weights,
                                           mode="dense")["params"]
    return params, _pipeline_tx(cfg, hp).init(params)


def pipeline_data_key(key):
    """The key of a pipeline's batches and augmentation draws (the other half of its seed's split)."""
    return jax.random.split(key)[1]


def pipeline_step(carry, t, arch, k_data, x_train, y_train, *, space, cfg: PipelineConfig, mean, std) -> tuple:
    """Optimizer step ``t`` of one pipeline: ``((params, opt_state), loss)``. Its batch (``batch_size``
    rows drawn uniformly with replacement) and augmentation draws are functions of ``k_data`` and ``t``
    alone. The one step of every pipeline training: the in-search scan (``train_pipeline``) and the
    checkpointed retrain (``jaxnas.training.pipeline_runs``)."""
    net = pipeline_net(space, cfg)
    weights, aug, hp = pipeline_parts(space, arch, cfg)
    tx = _pipeline_tx(cfg, hp)
    ncls = space.sub(space.nas).num_classes
    n = x_train.shape[0]
    B, T = int(cfg.batch_size), int(cfg.steps)

    def prep(x, k):
        k_aug, k_base = jax.random.split(k)
        if aug is not None:
            x = A.apply_policy(x, k_aug, *aug)                         # the pipeline's AUG agent
        if cfg.flip or cfg.crop_padding:
            x = random_crop_flip(k_base, x, cfg.crop_padding) if cfg.flip else \
                _crop_only(k_base, x, cfg.crop_padding)
        return normalize(x, mean, std)

    def loss_fn(p, x, y):
        # a scan body: the convs take the CPU gradient (XLA's own is slow in a loop on CPU)
        logits = net.apply({"params": p}, x, weights, mode="dense", train=True, control_flow=True)
        labels = optax.smooth_labels(jax.nn.one_hot(y, ncls), hp["label_smoothing"])
        return jnp.mean(optax.softmax_cross_entropy(logits, labels))

    p, o = carry
    k = jax.random.fold_in(k_data, t)
    k_idx, k_prep = jax.random.split(k)
    idx = jax.random.randint(k_idx, (B,), 0, n)
    x = prep(x_train[idx], k_prep)
    scale = 0.5 * (1.0 + jnp.cos(jnp.pi * t / T)) if cfg.schedule == "cosine" else 1.0
    o.hyperparams["learning_rate"] = hp["lr"] * scale
    loss, g = jax.value_and_grad(loss_fn)(p, x, y_train[idx])
    upd, o = tx.update(g, o, p)
    return (optax.apply_updates(p, upd), o), loss


def pipeline_evaluate(params, arch, x_val, y_val, *, space, cfg: PipelineConfig, mean, std) -> dict:
    """``val_accuracy`` and ``val_loss`` of one trained pipeline on ``(x_val, y_val)``, in batches of
    ``eval_batch`` (BatchNorm on each batch's statistics, as in training)."""
    net = pipeline_net(space, cfg)
    weights, _, _ = pipeline_parts(space, arch, cfg)
    nv = x_val.shape[0]
    eb = min(int(cfg.eval_batch), nv)
    nb = -(-nv // eb)
    pad = nb * eb - nv
    xv = jnp.concatenate([x_val, jnp.repeat(x_val[:1], pad, 0)]) if pad else x_val
    xv = xv.reshape((nb, eb) + tuple(x_val.shape[1:]))
    logits = jax.lax.map(lambda xb: net.apply({"params": params}, normalize(xb, mean, std), weights,
                                              mode="dense", train=True), xv).reshape(nb * eb, -1)[:nv]
    loss, acc = classification_loss(logits, y_val)
    return {"val_accuracy": acc, "val_loss": loss}


def pipeline_tail(cfg: PipelineConfig) -> int:
    """The last steps whose mean loss is a pipeline's ``train_loss`` (a quarter of them, at least one)."""
    return max(int(cfg.steps) // 4, 1)


def train_pipeline(arch, key, arrays, *, space, cfg: PipelineConfig, mean, std,
                   return_params: bool = False) -> dict:
    """Train ONE image pipeline from scratch and evaluate it: a pure, traceable function (vmap it).

    ``arch``: the pipeline ``int[D]`` of ``space`` (a ProductSpace with an NB201 NAS agent, optional
    AUG and HPO agents); ``key``: init, data order and augmentation draws; ``arrays``: ``(x_train,
    y_train, x_val, y_val)``, images as float32 uint8 values ``[N, H, W, C]``. Returns scalars
    ``val_accuracy``, ``val_loss``, ``train_loss`` (mean over the last quarter of the steps).
    ``pipeline_step`` scanned over the steps (the checkpointed retrain runs the same step)."""
    x_train, y_train, x_val, y_val = arrays
    T = int(cfg.steps)
    carry = pipeline_init(arch, key, x_train.shape[1:], space=space, cfg=cfg)
    carry = _vary_like(carry, key, arch, *arrays)                  # per device (shard_map)
    k_data = pipeline_data_key(key)
    step = functools.partial(pipeline_step, arch=arch, k_data=k_data, x_train=x_train, y_train=y_train,
                             space=space, cfg=cfg, mean=mean, std=std)
    (params, _), losses = jax.lax.scan(step, carry, jnp.arange(T))
    out = pipeline_evaluate(params, arch, x_val, y_val, space=space, cfg=cfg, mean=mean, std=std)
    out["train_loss"] = jnp.mean(losses[-pipeline_tail(cfg):])
    if return_params:
        out["params"] = params
    return out


def _crop_only(key, images, padding: int):
    n, h, w, c = images.shape
    k_y, k_x = jax.random.split(key)
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy = jax.random.randint(k_y, (n,), 0, 2 * padding + 1)
    dx = jax.random.randint(k_x, (n,), 0, 2 * padding + 1)
    return jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (h, w, c)))(padded, dy, dx)


def pipeline_reward(accuracy, flops, flops_constraint: Optional[float], flops_exponent: float):
    """MA2ML's reward with a FLOPs constraint (poster, ImageNet): ``R = Acc (FLOPs / constraint)^w``
    (soft, as MnasNet: applied on both sides of the constraint; ``w < 0``); ``Acc`` without one."""
    if flops_constraint is None:
        return accuracy
    return accuracy * (flops / flops_constraint) ** flops_exponent
