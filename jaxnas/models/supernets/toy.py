"""The toy teacher-student regression of AdvantageNAS sec. 5.1.

DAG: one input node (13x13x1, uniform in [-1, 1]), ``E = 10`` intermediate nodes, one output node.
Edge input -> node i chooses one of ``K = 10`` candidate ops, each a 7x7 stride-2 single-channel
convolution followed by tanh (13x13 -> 4x4, VALID). Node i -> output is a fixed 4x4 convolution
(4x4 -> 1x1, i.e. a dot product); the output node averages the E results.

Only the architecture is searched: all convolution weights ``w*`` are random, fixed and shared by
teacher and student (sec. 5.1: "the weights ... are fixed to be the same (w*) for both networks");
the teacher architecture ``a*`` is random too. Loss = mean squared error over the batch, reward =
-loss, and the loss is zero iff the student picks ``a*`` (for generic random kernels).

Sparse mode gathers each edge's chosen kernel (``kernels[e, idx]``, all candidates share one shape)
and runs one convolution, then multiplies the op output by ``weights[e, idx]``: the gradient of the
reward w.r.t. ``weights[e, idx]`` is exactly dr/dO_e . O_e^idx (AdvantageNAS eq. 7), and no
``lax.switch`` is needed (vmap-safe, and fast on CPU). Dense mode computes every candidate and sums
``weights[e, k] * O_e^k`` (eq. 1). The reference implementation applies tanh after mixing the
candidates; here tanh belongs to the op (sec. 5.1 "filters ... followed by tanh"), so eq. 1 mixes
op outputs. Both agree at one-hot weights.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from jaxnas.spaces.base import Space

INPUT_SIZE = 13
OP_KERNEL = 7
OP_STRIDE = 2
OUT_KERNEL = 4  # (13 - 7) // 2 + 1 = 4: the 4x4 output conv reduces each node to one number


def toy_space(num_edges: int = 10, num_ops: int = 10) -> Space:
    """``num_edges`` decisions ``"i<-0"`` (edge from the input node 0 to node i), each choosing one of
    ``num_ops`` convolutions ``conv7x7_j``."""
    if num_edges < 1 or num_ops < 1:
        raise ValueError(f"num_edges={num_edges} and num_ops={num_ops} must be >= 1")
    return Space(decision_names=tuple(f"{i + 1}<-0" for i in range(num_edges)),
                 choices=tuple(tuple(f"conv7x7_{j}" for j in range(num_ops))
                               for _ in range(num_edges)))


def _lecun(fan_in):
    # Chainer's default (the authors' framework): N(0, 1/fan_in)
    return lambda key, shape: jax.random.normal(key, shape) / jnp.sqrt(fan_in)


class ToyNet(nn.Module):
    """``apply({'params': p}, x float[B, 13, 13, 1], weights float[E, K], mode) -> float[B]``."""
    num_edges: int = 10
    num_ops: int = 10

    @nn.compact
    def __call__(self, x, weights, mode: str = "sparse"):
        E, K = self.num_edges, self.num_ops
        if x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 1):
            raise ValueError(f"inputs have shape {x.shape}; the toy net needs (B, 13, 13, 1)")
        if weights.shape != (E, K):
            raise ValueError(f"weights have shape {weights.shape}; this net needs ({E}, {K})")
        kernels = self.param("op_kernels", _lecun(OP_KERNEL ** 2), (E, K, OP_KERNEL, OP_KERNEL))
        out_kernels = self.param("out_kernels", _lecun(OUT_KERNEL ** 2), (E, OUT_KERNEL, OUT_KERNEL))
        if mode == "sparse":
            idx = jnp.argmax(weights, axis=-1)                     # the one op run per edge
            k = kernels[jnp.arange(E), idx]                        # [E, 7, 7]
            h = jnp.tanh(_conv(x, k))                              # [B, 4, 4, E] = O_e^idx
            h = h * weights[jnp.arange(E), idx]                    # eq. 1 with one-hot a_e
        elif mode == "dense":
            k = kernels.reshape(E * K, OP_KERNEL, OP_KERNEL)
            h = jnp.tanh(_conv(x, k)).reshape(x.shape[0], OUT_KERNEL, OUT_KERNEL, E, K)
            h = jnp.einsum("bhwek,ek->bhwe", h, weights)           # eq. 1
        else:
            raise ValueError(f"mode must be 'sparse' or 'dense', got {mode!r}")
        node_out = jnp.einsum("bhwe,ehw->be", h, out_kernels)      # 4x4 VALID conv -> 1x1
        return jnp.mean(node_out, axis=-1)                         # mean aggregation


def _conv(x, k):
    """7x7 stride-2 VALID convolution of one input channel with ``k[c]`` as output channel c.

    Written as patches @ kernels: the patches do not depend on the kernel, so under ``vmap`` over
    trials (a batched kernel) this stays a batched matmul instead of a slow grouped convolution."""
    patches = jax.lax.conv_general_dilated_patches(
        x, (OP_KERNEL, OP_KERNEL), (OP_STRIDE, OP_STRIDE), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))                # [B, 4, 4, 49], (kh, kw) order
    return jnp.einsum("bhwp,cp->bhwc", patches, k.reshape(k.shape[0], -1))


@struct.dataclass
class ToyTask:
    """A pytree (vmap over trials works): params w* and teacher a*; the module is static."""
    params: dict
    teacher: jax.Array                              # int32[E]: a*
    net: ToyNet = struct.field(pytree_node=False, default=ToyNet())


def make_task(key, num_edges: int = 10, num_ops: int = 10) -> ToyTask:
    """Random fixed weights w* and a random teacher architecture a* (sec. 5.1). Works under vmap."""
    kp, ka = jax.random.split(key)
    net = ToyNet(num_edges, num_ops)
    # the same parameters ``net.init`` makes, drawn directly (Flax's init traces the whole
    # forward pass eagerly, ~100x slower for this tiny net)
    k1, k2 = jax.random.split(kp)
    params = {"op_kernels": _lecun(OP_KERNEL ** 2)(k1, (num_edges, num_ops, OP_KERNEL, OP_KERNEL)),
              "out_kernels": _lecun(OUT_KERNEL ** 2)(k2, (num_edges, OUT_KERNEL, OUT_KERNEL))}
    teacher = jax.random.randint(ka, (num_edges,), 0, num_ops, jnp.int32)
    return ToyTask(params=params, teacher=teacher, net=net)


def sample_inputs(key, batch_size: int = 100) -> jax.Array:
    """Inputs uniform in [-1, 1]^{13x13x1} (sec. 5.1)."""
    return jax.random.uniform(key, (batch_size, INPUT_SIZE, INPUT_SIZE, 1), minval=-1.0, maxval=1.0)


def predict(task: ToyTask, x, weights, mode: str = "sparse"):
    return task.net.apply({"params": task.params}, x, weights, mode=mode)


def targets(task: ToyTask, x):
    """The teacher's outputs phi_{a*}(x)."""
    return predict(task, x, jax.nn.one_hot(task.teacher, task.net.num_ops))


def loss(task: ToyTask, x, weights, mode: str = "sparse", target=None):
    """Squared error between the student ``weights`` and the teacher ``a*``, averaged over x."""
    target = targets(task, x) if target is None else target
    return jnp.mean((predict(task, x, weights, mode) - target) ** 2)


def reward_fn(task: ToyTask, x, mode: str = "sparse"):
    """``weights -> (reward, aux)`` on the batch x: reward = -loss (higher is better)."""
    target = targets(task, x)  # computed once, outside any gradient

    def fn(weights):
        l = loss(task, x, weights, mode, target)
        return -l, {"loss": l}
    return fn
