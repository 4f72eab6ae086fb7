"""jaxnas against PyTorch, side by side on this CPU: the search steps of issue 27's table.

    python bench/vs_pytorch.py [--rounds 10] [--warmup 2] [--workloads ...] [--dense] [--warm-start]
                               [--cores 0,1] [--out bench/results/vs_pytorch.json] [--smoke]

Workloads (batch 64, 32x32x3 images; the data are random uint8 images with random labels, which
the cost of a step does not depend on; no augmentation on either side):

- ``nb201_weights``: the NAS-Bench-201 supernet (C 16, 5 cells per stage, the 5-op space) one-path
  weight step: a uniformly sampled architecture, the gradient of the training loss and a Nesterov
  SGD update (momentum 0.9, weight decay 5e-4, cosine lr, global-norm clip 1.0: the AdvantageNAS
  App. D weight optimizer, ``jaxnas/configs/advantagenas_nb201.py``);
- ``nb201_advantage_arch``: the AdvantageNAS architecture step of that config (the 4-op space
  without the zero op): sample from the policy, the validation reward and its gradient w.r.t. the
  architecture weights (eq. 7, weights frozen), the App. B moving averages and an Adam step on theta;
- ``darts8_sparse`` / ``darts8_sparse_scan_edges``: the DARTS search network (8 cells, C 16, 4 steps,
  8 ops, reductions at 1/3 and 2/3) one-path weight step, per-edge (the default config form) and with
  ``space.scan_edges=True``; DARTS's weight optimizer (SGD, momentum 0.9, weight decay 3e-4, cosine
  lr from 0.025, clip 5);
- ``darts8_dense`` (opt-in, ``--dense``: minutes per step on 2 cores): the dense weight step, every op
  of every edge weighted by the softmax of the DARTS strategy's alpha.

jaxnas side: the library's own search step (``jaxnas.config.experiment.build`` of a config; the
engine's compiled chunk, ``Search.run_chunk`` with one step per call, of the ``random`` strategy for
the weight steps, ``darts`` for the dense one, ``advantage`` for the architecture step), with the
persistent compilation cache on (as the CLI runs it) in a fresh directory: a cold start. PyTorch
side: written here from the papers' cell definitions (NAS-Bench-201: ReLU-Conv-BN ops, the
TinyNetwork skeleton with residual reduction blocks; DARTS: the search network, sep/dil convs,
FactorizedReduce, BN after pooling in the mixed op), eager mode, NCHW, BatchNorm on batch statistics
without affine parameters in the cells, one op per edge (sparse) or all of them (dense).

Protocol: per workload two long-lived worker processes (one jaxnas, one torch, both pinned with
``taskset`` to ``--cores``; torch with ``torch.set_num_threads(len(cores))``), started one after the
other; each reports the time from its process start to the end of its first step. Then paired
rounds: in each round both step once on the same new architecture (drawn by the jaxnas strategy; the
jaxnas worker computes the architecture its next step will sample from its state and checks it
afterwards), the order alternating between rounds; ``--warmup`` rounds first, not recorded. Reported:
the paired medians, the median of the per-round ratios jaxnas / PyTorch, their mean and standard
error (ddof=1), the peak resident memory of each worker (VmHWM) and ``os.getloadavg()`` before and
after. ``--warm-start`` also starts a second jaxnas worker on the now filled compilation cache;
``--cold-apart`` runs the rounds in that warm-started worker instead (the cold one stops after its
first step; DARTS-8 dense's compile memory beside PyTorch's exceeds this machine's 24 GB). Every
workload carries its commit, time and load; ``--merge`` keeps an existing file's other workloads.
The jaxnas worker keeps its compiled calls' temporary blocks as ``jaxnas search`` does
(``jaxnas.core.host_memory.retain_in_process``; ``--no-retain-host-memory``: glibc's default, as every
row before 2026-12-07 ran, labelled in the table); PyTorch runs as its users run it. ``--chunk K``:
each round is K steps, one compiled call on the jaxnas side as a search runs them (``search.chunk``, 50 by default; the
issue's protocol is K = 1, one call per step, which pays the per-call costs, e.g. faulting in the
step's temporary block, every step), the same K architectures one by one on the PyTorch side; per-step
times.

Writes ``--out`` (default bench/results/vs_pytorch.json) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "vs_pytorch.json"
PREFIX = "@@vs_pytorch "          # protocol lines of the workers on stdout

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_OPS_NO_ZERO = NB201_OPS[1:]
DARTS_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5")

# name -> (skeleton, kind of engine phase, description); kind "weights": weight step, "strategy": arch step
WORKLOADS = {
    "nb201_weights": ("nb201", "weights", "NB201 sparse weight step, Nesterov SGD"),
    "nb201_advantage_arch": ("nb201", "strategy", "NB201 AdvantageNAS architecture step"),
    "darts8_sparse": ("darts", "weights", "DARTS-8 sparse weight step, per edge (`space.scan_edges=False`)"),
    "darts8_sparse_scan_edges": ("darts", "weights", "DARTS-8 sparse weight step, scanned edges (the default)"),
    "darts8_dense": ("darts", "weights", "DARTS-8 dense weight step"),
}
# each in its default form (DARTS sparse: scanned edges; the per-edge form on request, its compile is minutes)
DEFAULT_WORKLOADS = ("nb201_weights", "nb201_advantage_arch", "darts8_sparse_scan_edges")
SMOKE_WORKLOADS = ("nb201_weights", "nb201_advantage_arch")


# ---- the workloads as jaxnas configs (bench/supernet_cost.py's search_step form uses these too) ------
def jaxnas_config(workload: str, data_path: str, *, C: int = 16, cells: int = 5, num_cells: int = 8,
                  batch: int = 64, steps: int = 10_000) -> dict:
    """The unresolved jaxnas config of ``workload`` on the image npz ``data_path``."""
    skeleton, kind, _ = WORKLOADS[workload]
    data = {"name": "image_npz", "path": str(data_path), "val_fraction": 0.5, "augment": False}
    search = {"steps": steps, "warmup_steps": steps // 2, "batch_size": batch, "val_batch_size": batch,
              "chunk": 1, "reward": "neg_loss"}
    if skeleton == "nb201":
        # AdvantageNAS on NAS-Bench-201 (App. D): its weight optimizer; the architecture step its strategy
        from jaxnas.configs.advantagenas_nb201 import get_config
        cfg = get_config()
        cfg["data"], cfg["search"] = data, {**cfg["search"], **search}
        cfg["space"] = {**cfg["space"], "C": C, "cells_per_stage": cells}
        if kind == "weights":        # the standard 5-op space, uniform one-path sampling
            cfg["space"].pop("ops")
            cfg["strategy"] = {"name": "random"}
        return cfg
    dense = workload.endswith("dense")
    return {"seed": 0, "data": data,
            "space": {"name": "darts", "C": C, "num_cells": num_cells, "scan_edges": workload.endswith("scan_edges")},
            "strategy": {"name": "darts"} if dense else {"name": "random"},
            # DARTS (Liu et al. 2019, sec. 3.1.1 / its search code): SGD momentum 0.9, wd 3e-4, cosine lr, clip 5
            "optimizer": {"name": "sgd", "lr": 0.025, "momentum": 0.9, "weight_decay": 3e-4, "schedule": "cosine",
                          "clip": 5.0},
            "search": search}


def make_images(path, n: int = 1024, seed: int = 0):
    """Random uint8 NHWC images and labels 0..9 (every class present) in an npz for ``image_npz``."""
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 32, 32, 3), np.uint8)
    y = np.arange(n) % 10
    rng.shuffle(y)
    np.savez(path, X=x, y=y)
    return path


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _say(msg: dict):
    sys.stdout.write(PREFIX + json.dumps(msg) + "\n")
    sys.stdout.flush()


def _commands():
    for line in sys.stdin:
        if line.strip():
            yield json.loads(line)


# ---- the jaxnas worker -----------------------------------------------------------------------------
def jax_worker(args):
    t0 = args.t0
    import jax
    import numpy as np
    if not args.no_retain_host_memory:   # as `jaxnas search` runs (before the first computation)
        from jaxnas.core import host_memory
        host_memory.retain_in_process()

    from jaxnas.config.experiment import build
    from jaxnas.config.settings import resolve
    from jaxnas.data import BatchSampler, gather
    from jaxnas.engine import compile_cache
    t_import = time.time() - t0
    cache = compile_cache.enable(args.cache_dir) if args.cache_dir else None
    skeleton, kind, _ = WORKLOADS[args.workload]
    cfg = resolve(jaxnas_config(args.workload, args.data, C=args.C, cells=args.cells, num_cells=args.num_cells,
                                batch=args.batch))
    exp = build(cfg)
    search, space, d = exp.search, exp.space, exp.data
    state = search.init(jax.random.key(0))
    jax.block_until_ready(state)
    t_init = time.time() - t0
    tr = BatchSampler(len(d.y_train), cfg["search"]["batch_size"], 0)
    va = BatchSampler(len(d.y_val), cfg["search"]["val_batch_size"], 1)
    strategy_samples = kind == "strategy" and hasattr(state.strategy, "logits")

    @jax.jit
    def peek_at(st, key):
        """The architecture (and its weights) the engine's step from ``key`` evaluates: its key
        derivation (jaxnas/engine/search.py ``Search._step``, lane 0): ``strategy.sample`` with the
        first key for a weight step; a policy strategy's ``step`` samples from its logits with the
        fourth. Returns the next step's key too."""
        ks = jax.random.split(key, 5)
        if strategy_samples:
            arch = space.sample(jax.random.fold_in(ks[4], 0), st.strategy.logits)
            return (arch, space.one_hot(arch)), ks[0]
        return search.strategy.sample(st.strategy, jax.random.fold_in(ks[1], 0)), ks[0]

    def peek(st):
        """The ``--chunk`` architectures (and weights) the next call runs, one per step (a policy's
        later steps sample from logits the chunk's first steps update: those can differ)."""
        out, key = [], st.key
        for _ in range(args.chunk):
            (arch, w), key = peek_at(st, key)
            out.append((np.asarray(arch), np.asarray(w)))
        return out

    step_no = [0]
    mismatches = [0]

    def step(state):
        i, n = step_no[0], args.chunk
        planned = peek(state)
        tb, vb = gather((d.x_train, d.y_train), tr.chunk(i * n, n)), gather((d.x_val, d.y_val), va.chunk(i * n, n))
        best0 = state.strategy.best_reward if strategy_samples else None
        t = time.perf_counter()
        state, m = search.run_chunk(state, tb, vb, kind=kind)
        jax.block_until_ready(state)
        dt = (time.perf_counter() - t) / n
        if kind == "weights":       # the architectures the steps sampled
            checked = np.array_equal(np.asarray(m["sample/arch"])[:, 0], np.stack([a for a, _ in planned]))
        elif n == 1:                # a new best is the architecture just evaluated
            nb = state.strategy.best_reward
            checked = bool(nb == best0) or np.array_equal(np.asarray(state.strategy.best_arch), planned[0][0])
        else:
            checked = True
        mismatches[0] += not checked
        step_no[0] += 1
        return state, dt

    def plan(st):
        nxt = peek(st)
        return {"archs": [a.tolist() for a, _ in nxt], "weights": [w.tolist() for _, w in nxt]}

    state, first = step(state)
    t_first = time.time() - t0
    nxt = plan(state)
    _say({"ready": True, "start_to_first_step_s": t_first, "import_s": t_import,
          "build_init_s": t_init - t_import, "first_step_s": first, "compile_cache": str(cache) if cache else None,
          **nxt, "space_shape": list(space.shape), "ops": list(space.choices[0]),
          "arch_text": space.encode(np.asarray(nxt["archs"][0]))})
    for cmd in _commands():
        if cmd["cmd"] == "step":
            state, dt = step(state)
            _say({"step_s": dt, **plan(state)})
        elif cmd["cmd"] == "stop":
            _say({"peak_rss_mb": peak_rss_mb(), "arch_mismatches": mismatches[0], "steps": step_no[0]})
            return


# ---- the PyTorch side: written from the papers' cell definitions -------------------------------------
def torch_models():
    """NAS-Bench-201 and DARTS search supernets in PyTorch (one op per edge, or all, per call)."""
    import torch
    import torch.nn as nn

    def bn(c, affine=False):   # search cells: batch statistics, no running state
        return nn.BatchNorm2d(c, affine=affine, track_running_stats=False)

    class ReLUConvBN(nn.Module):
        def __init__(self, cin, cout, k, stride=1, dilation=1, affine=False):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, stride, dilation * (k - 1) // 2, dilation=dilation, bias=False)
            self.bn = bn(cout, affine)

        def forward(self, x):
            return self.bn(self.conv(torch.relu(x)))

    class DilConv(nn.Module):   # ReLU, depthwise k x k (dilated), pointwise 1x1, BN
        def __init__(self, cin, cout, k, stride, dilation):
            super().__init__()
            self.dw = nn.Conv2d(cin, cin, k, stride, dilation * (k - 1) // 2, dilation=dilation, groups=cin,
                                bias=False)
            self.pw = nn.Conv2d(cin, cout, 1, bias=False)
            self.bn = bn(cout)

        def forward(self, x):
            return self.bn(self.pw(self.dw(torch.relu(x))))

    class SepConv(nn.Sequential):   # two DilConv of dilation 1, the stride on the first
        def __init__(self, c, k, stride):
            super().__init__(DilConv(c, c, k, stride, 1), DilConv(c, c, k, 1, 1))

    class FactorizedReduce(nn.Module):   # two offset 1x1 stride-2 convs, concatenated, BN
        def __init__(self, cin, cout, affine=False):
            super().__init__()
            self.a = nn.Conv2d(cin, cout // 2, 1, 2, bias=False)
            self.b = nn.Conv2d(cin, cout // 2, 1, 2, bias=False)
            self.bn = bn(cout, affine)

        def forward(self, x):
            x = torch.relu(x)
            return self.bn(torch.cat([self.a(x), self.b(x[:, :, 1:, 1:])], 1))

    class Zero(nn.Module):
        def __init__(self, stride):
            super().__init__()
            self.stride = stride

        def forward(self, x):
            return (x if self.stride == 1 else x[:, :, ::self.stride, ::self.stride]).mul(0.0)

    class Pool(nn.Module):
        def __init__(self, c, kind, stride, with_bn):
            super().__init__()
            self.pool = (nn.MaxPool2d(3, stride, 1) if kind == "max" else
                         nn.AvgPool2d(3, stride, 1, count_include_pad=False))
            self.bn = bn(c) if with_bn else None

        def forward(self, x):
            y = self.pool(x)
            return self.bn(y) if self.bn is not None else y

    def nb201_op(name, c):
        return {"none": lambda: Zero(1), "skip_connect": nn.Identity,
                "nor_conv_1x1": lambda: ReLUConvBN(c, c, 1), "nor_conv_3x3": lambda: ReLUConvBN(c, c, 3),
                "avg_pool_3x3": lambda: Pool(c, "avg", 1, False)}[name]()

    def darts_op(name, c, stride):
        return {"none": lambda: Zero(stride),
                "max_pool_3x3": lambda: Pool(c, "max", stride, True),    # DARTS search: BN after pooling
                "avg_pool_3x3": lambda: Pool(c, "avg", stride, True),
                "skip_connect": lambda: nn.Identity() if stride == 1 else FactorizedReduce(c, c),
                "sep_conv_3x3": lambda: SepConv(c, 3, stride), "sep_conv_5x5": lambda: SepConv(c, 5, stride),
                "dil_conv_3x3": lambda: DilConv(c, c, 3, stride, 2),
                "dil_conv_5x5": lambda: DilConv(c, c, 5, stride, 2)}[name]()

    def edge(ops, names, x, a, w, e, dense):
        """One edge: the chosen op scaled by its weight (sparse), or the weighted sum of all (dense)."""
        if not dense:
            return ops[a](x) * w[e, a]
        out = None
        for k, (name, op) in enumerate(zip(names, ops)):
            if name != "none":
                y = op(x) * w[e, k]
                out = y if out is None else out + y
        return out

    def cell_nodes(cell, nodes, arch, w, dense):
        """A cell's nodes after its input ``nodes``: node j is the sum of the edges (j, i), in
        ``cell.edges`` order (by destination, then source) with ops ``cell.ops``."""
        for e, (j, i) in enumerate(cell.edges):
            y = edge(cell.ops[e], cell.names, nodes[i], arch[e], w, e, dense)
            if j == len(nodes):
                nodes.append(y)
            else:
                nodes[j] = nodes[j] + y
        return nodes

    class NB201Cell(nn.Module):
        """4 nodes, node j = sum over i < j of op_{j,i}(node i); edges by destination then source."""
        def __init__(self, c, names):
            super().__init__()
            self.names = names
            self.edges = [(j, i) for j in range(1, 4) for i in range(j)]
            self.ops = nn.ModuleList(nn.ModuleList(nb201_op(n, c) for n in names) for _ in self.edges)

        def forward(self, x, arch, w, dense):
            return cell_nodes(self, [x], arch, w, dense)[-1]

    class ResBlock(nn.Module):   # NAS-Bench-201's residual reduction between stages
        def __init__(self, cin, cout):
            super().__init__()
            self.a = ReLUConvBN(cin, cout, 3, 2, affine=True)
            self.b = ReLUConvBN(cout, cout, 3, 1, affine=True)
            self.down = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

        def forward(self, x):
            return self.b(self.a(x)) + self.down(x)

    class NB201Net(nn.Module):
        """Stem conv + BN, 3 stages of N cells at C, 2C, 4C with residual reductions, BN-ReLU, pool, linear."""
        def __init__(self, C, N, names, num_classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, C, 3, 1, 1, bias=False), nn.BatchNorm2d(C, track_running_stats=False))
            layers = []
            for s in range(3):
                c = C * 2 ** s
                if s:
                    layers.append(ResBlock(c // 2, c))
                layers += [NB201Cell(c, names) for _ in range(N)]
            self.layers = nn.ModuleList(layers)
            self.last = nn.BatchNorm2d(4 * C, track_running_stats=False)
            self.fc = nn.Linear(4 * C, num_classes)

        def forward(self, x, arch, w, dense=False):
            x = self.stem(x)
            for layer in self.layers:
                x = layer(x, arch, w, dense) if isinstance(layer, NB201Cell) else layer(x)
            return self.fc(torch.relu(self.last(x)).mean((2, 3)))

    class DartsCell(nn.Module):
        """Two preprocessed inputs, 4 steps each summing one mixed edge from every earlier node,
        output the concatenation of the 4 steps."""
        def __init__(self, cpp, cp, c, reduction, reduction_prev, names):
            super().__init__()
            self.names = names
            self.pre0 = FactorizedReduce(cpp, c) if reduction_prev else ReLUConvBN(cpp, c, 1)
            self.pre1 = ReLUConvBN(cp, c, 1)
            self.edges = [(j, i) for j in range(2, 6) for i in range(j)]
            self.ops = nn.ModuleList(nn.ModuleList(darts_op(n, c, 2 if reduction and i < 2 else 1) for n in names)
                                     for (j, i) in self.edges)

        def forward(self, s0, s1, arch, w, dense):
            return torch.cat(cell_nodes(self, [self.pre0(s0), self.pre1(s1)], arch, w, dense)[2:], 1)

    class DartsNet(nn.Module):
        """Stem 3C, ``layers`` cells with reductions (channels doubled) at 1/3 and 2/3, pool, linear."""
        def __init__(self, C, layers, names, num_classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 3 * C, 3, 1, 1, bias=False), bn(3 * C))
            cpp, cp, c = 3 * C, 3 * C, C
            self.cells, self.reductions = nn.ModuleList(), (layers // 3, 2 * layers // 3)
            red_prev = False
            for i in range(layers):
                red = i in self.reductions
                c = c * 2 if red else c
                self.cells.append(DartsCell(cpp, cp, c, red, red_prev, names))
                cpp, cp, red_prev = cp, 4 * c, red
            self.fc = nn.Linear(cp, num_classes)
            self.E = 14

        def forward(self, x, arch, w, dense=False):
            s0 = s1 = self.stem(x)
            for i, cell in enumerate(self.cells):
                b = int(i in self.reductions) * self.E     # block 0: normal, 1: reduction
                s0, s1 = s1, cell(s0, s1, arch[b:b + self.E], w[b:b + self.E], dense)
            return self.fc(s1.mean((2, 3)))

    return NB201Net, DartsNet


def torch_worker(args):
    t0 = args.t0
    import numpy as np
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    t_import = time.time() - t0
    skeleton, kind, _ = WORKLOADS[args.workload]
    torch.manual_seed(0)
    NB201Net, DartsNet = torch_models()
    if skeleton == "nb201":
        names = NB201_OPS if kind == "weights" else NB201_OPS_NO_ZERO
        net = NB201Net(args.C, args.cells, names)
    else:
        names = DARTS_OPS
        net = DartsNet(args.C, args.num_cells, names)
    dense = args.workload.endswith("dense")
    D = 6 if skeleton == "nb201" else 28
    K = len(names)
    data = np.load(args.data)
    x_all = torch.from_numpy(data["X"]).permute(0, 3, 1, 2).contiguous()
    y_all = torch.from_numpy(data["y"].astype(np.int64))
    mean = x_all.float().mean((0, 2, 3), keepdim=True)
    std = x_all.float().std((0, 2, 3), keepdim=True)
    rng = np.random.default_rng(1)
    params = [p for p in net.parameters()]
    steps = 10_000
    if kind == "weights":
        if skeleton == "nb201":   # AdvantageNAS App. D: Nesterov SGD, lr 0.1 cosine, wd 5e-4, clip 1
            opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
            clip = 1.0
        else:                     # DARTS: SGD lr 0.025 cosine, momentum 0.9, wd 3e-4, clip 5
            opt = torch.optim.SGD(params, lr=0.025, momentum=0.9, weight_decay=3e-4)
            clip = 5.0
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    else:                         # AdvantageNAS theta: Adam (0.5, 0.999), lr 3e-4 cosine, wd 3e-3, clip 1
        for p in params:
            p.requires_grad_(False)
        theta = torch.zeros(D, K, requires_grad=True)
        opt = torch.optim.Adam([theta], lr=3e-4, betas=(0.5, 0.999), weight_decay=3e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        ema = torch.zeros(D, K)
        zero = names.index("none") if "none" in names else -1
        decay = 0.95
    net.train()

    def batch():
        idx = torch.from_numpy(rng.integers(0, len(y_all), args.batch))
        return (x_all[idx].float() - mean) / std, y_all[idx]

    def weight_step(arch, w):
        x, y = batch()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x, arch, w, dense), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        return float(loss.detach())

    def arch_step(arch):
        nonlocal ema
        x, y = batch()
        a = torch.tensor(arch)
        w = F.one_hot(a, K).float().requires_grad_(True)
        reward = -F.cross_entropy(net(x, arch, w), y)
        g, = torch.autograd.grad(reward, w)                 # eq. 7: dr/dO_i . O_i^j
        adv = (g * w.detach()).sum(-1)
        onehot = w.detach()
        ema = torch.where(onehot > 0, decay * ema + (1 - decay) * adv[:, None], ema)     # eq. 9
        if zero >= 0:                                       # App. B: a sampled zero op gets the worst average
            others = torch.ones(K, dtype=torch.bool)
            others[zero] = False
            adv = torch.where(a == zero, ema[:, others].min(-1).values, adv)
        with torch.no_grad():
            delta = adv[:, None] * (onehot - torch.softmax(theta, -1))   # Alg. 1 line 9
        theta.grad = -delta
        torch.nn.utils.clip_grad_norm_([theta], 1.0)
        opt.step()
        sched.step()
        return float(reward.detach())

    def step(arch, weights):
        t = time.perf_counter()
        if kind == "weights":
            w = torch.tensor(weights, dtype=torch.float32) if weights is not None else \
                F.one_hot(torch.tensor(arch), K).float()
            weight_step(arch, w)
        else:
            arch_step(arch)
        return time.perf_counter() - t

    first_arch = [int(a) for a in rng.integers(0, K, D)]
    first_w = np.full((D, K), 1.0 / K).tolist() if dense else None
    first = step(first_arch, first_w)
    _say({"ready": True, "start_to_first_step_s": time.time() - t0, "import_s": t_import, "first_step_s": first,
          "num_params": sum(p.numel() for p in params), "threads": torch.get_num_threads()})
    for cmd in _commands():
        if cmd["cmd"] == "step":
            archs, weights = cmd["archs"], cmd["weights"]     # one call: the jaxnas chunk's steps
            total = sum(step(a, w if dense else None) for a, w in zip(archs, weights))
            _say({"step_s": total / len(archs)})
        elif cmd["cmd"] == "stop":
            _say({"peak_rss_mb": peak_rss_mb()})
            return


# ---- the coordinator ----------------------------------------------------------------------------------
class Worker:
    def __init__(self, side, args, workload, data, cache_dir=None):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--workload", workload,
               "--data", str(data), "--C", str(args.C), "--cells", str(args.cells), "--num-cells",
               str(args.num_cells), "--batch", str(args.batch), "--threads", str(args.torch_threads),
               "--chunk", str(args.chunk)]
        if side == "jax" and args.no_retain_host_memory:
            cmd += ["--no-retain-host-memory"]
        if cache_dir:
            cmd += ["--cache-dir", str(cache_dir)]
        if args.cores:
            cmd = ["taskset", "-c", args.cores] + cmd
        self.side = side
        t0 = time.time()
        self.proc = subprocess.Popen(cmd + ["--t0", repr(t0)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, cwd=str(HERE.parent))

    def read(self):
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
            sys.stderr.write(f"[{self.side}] {line}")
        raise RuntimeError(f"the {self.side} worker exited (code {self.proc.wait()}) before answering")

    def send(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self):
        out = self.send(cmd="stop")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        return out


def _stats(jx, th):
    ratios = [a / b for a, b in zip(jx, th)]
    n = len(ratios)
    mean = statistics.fmean(ratios)
    se = statistics.stdev(ratios) / math.sqrt(n) if n > 1 else float("nan")
    return {"jaxnas_step_ms_median": 1000 * statistics.median(jx), "torch_step_ms_median": 1000 * statistics.median(th),
            "ratio_of_medians": statistics.median(jx) / statistics.median(th),
            "ratio_median": statistics.median(ratios), "ratio_mean": mean, "ratio_se": se, "rounds": n}


def run_workload(name, args, data, tmp):
    skeleton, kind, desc = WORKLOADS[name]
    load0 = os.getloadavg()
    cache = Path(tmp) / f"xla-cache-{name}"      # fresh: a cold start
    print(f"== {name}: starting the jaxnas worker (cold compilation cache {cache})", file=sys.stderr, flush=True)
    jw = Worker("jax", args, name, data, cache)
    jready = jw.read()
    starts = ("start_to_first_step_s", "import_s", "build_init_s", "first_step_s")
    out = {"description": desc, "kind": kind, "space_shape": jready["space_shape"], "ops": jready["ops"],
           "jaxnas": {k: jready[k] for k in starts}, "torch": None, "load_average_before": list(load0),
           "git": git_head(), "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "jaxnas_retained_host_memory": not args.no_retain_host_memory}
    print(f"   jaxnas first step {jready['start_to_first_step_s']:.1f} s after start", file=sys.stderr, flush=True)
    if args.cold_apart:     # the rounds run in a warm-started process: no compile memory beside PyTorch
        out["jaxnas"]["cold_process_peak_rss_mb"] = jw.stop()["peak_rss_mb"]
        jw = Worker("jax", args, name, data, cache)
        jready = jw.read()
        out["jaxnas"]["warm_cache"] = {k: jready[k] for k in starts}
        out["rounds_process"] = "warm-started (--cold-apart)"
        print(f"   jaxnas warm start: first step {jready['start_to_first_step_s']:.1f} s after start", file=sys.stderr,
              flush=True)
    tw = None
    if not args.no_torch:
        tw = Worker("torch", args, name, data)
        tready = tw.read()
        out["torch"] = {k: tready[k] for k in ("start_to_first_step_s", "import_s", "first_step_s", "num_params",
                                                "threads")}
        print(f"   torch first step {tready['start_to_first_step_s']:.1f} s after start", file=sys.stderr, flush=True)
    nxt = jready
    jx, th, seen = [], [], []
    for r in range(args.warmup + args.rounds):
        archs, weights = nxt["archs"], nxt["weights"]
        order = ("jax", "torch") if r % 2 == 0 else ("torch", "jax")
        times = {}
        for side in order:
            if side == "jax":
                nxt = jw.send(cmd="step")
                times["jax"] = nxt["step_s"]
            elif tw is not None:
                times["torch"] = tw.send(cmd="step", archs=archs, weights=weights)["step_s"]
        if r >= args.warmup:
            jx.append(times["jax"])
            seen.extend(tuple(a) for a in archs)
            if tw is not None:
                th.append(times["torch"])
        print(f"   round {r}{' (warm-up)' if r < args.warmup else ''}: jaxnas {1000 * times['jax']:.0f} ms"
              + (f", torch {1000 * times['torch']:.0f} ms" if tw is not None else ""), file=sys.stderr, flush=True)
    jstop = jw.stop()
    out["jaxnas"].update({"peak_rss_mb": jstop["peak_rss_mb"], "arch_mismatches": jstop["arch_mismatches"],
                          "steps_ms": [1000 * t for t in jx]})
    if tw is not None:
        out["torch"].update({"peak_rss_mb": tw.stop()["peak_rss_mb"], "steps_ms": [1000 * t for t in th]})
        out.update(_stats(jx, th))
    else:
        out["jaxnas_step_ms_median"] = 1000 * statistics.median(jx)
    out["distinct_archs"] = len(set(seen))
    out["steps_per_call"] = args.chunk
    if args.warm_start and not args.cold_apart:   # a second jaxnas process on the cache the first one filled
        w2 = Worker("jax", args, name, data, cache)
        ready = w2.read()
        w2.stop()
        out["jaxnas"]["warm_cache"] = {k: ready[k] for k in ("start_to_first_step_s", "import_s", "build_init_s",
                                                             "first_step_s")}
    out["load_average_after"] = list(os.getloadavg())
    return out


def _machine(args):
    cpu = None
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import jax
    out = {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu, "cpu_count": os.cpu_count(),
           "cores_pinned": args.cores, "python": platform.python_version(), "jax": jax.__version__,
           "jax_backend": jax.default_backend()}
    try:
        import torch
        out.update({"torch": torch.__version__, "torch_threads": args.torch_threads,
                    "torch_mkldnn": bool(torch.backends.mkldnn.is_available())})
    except ImportError:
        out["torch"] = None
    out["git"] = git_head()
    return out


def git_head():
    """The short commit of this checkout (None outside git): every bench stamps its results with it."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE, timeout=10, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _fmt_ms(v):
    return f"{v / 1000:.1f} s" if v >= 10_000 else f"{v:,.0f} ms"


def table(results) -> str:
    rows = ["| workload | jaxnas | PyTorch | jaxnas / PyTorch (median of rounds; mean ± s.e.) | first step after "
            "start, jaxnas / PyTorch | peak RSS, jaxnas / PyTorch | measured (UTC, git, load) |",
            "|---|---|---|---|---|---|---|"]
    for name, w in results["workloads"].items():
        j, t = w["jaxnas"], w["torch"]
        meta = results.get("meta", {})
        when = (f"{w.get('utc', meta.get('utc'))}, {w.get('git', meta.get('git'))}, "
                f"{w['load_average_before'][0]:.1f}" + (", rounds warm-started" if "rounds_process" in w else ""))
        w = {**w, "description": WORKLOADS[name][2] if name in WORKLOADS else w["description"]}   # today's labels
        if w.get("steps_per_call", 1) > 1:
            w["description"] += f", {w['steps_per_call']} steps per call"
        if not w.get("jaxnas_retained_host_memory", False):      # rows before 2026-12-07 or --no-retain-...
            w["description"] += " (jaxnas: glibc's default host memory)"
        first = f"{j['start_to_first_step_s']:.1f} s"
        if "warm_cache" in j:
            first += f" (warm cache {j['warm_cache']['start_to_first_step_s']:.1f} s)"
        if t is None:
            rows.append(f"| {w['description']} | {_fmt_ms(w['jaxnas_step_ms_median'])} | – | – | {first} / – | "
                        f"{j['peak_rss_mb'] / 1024:.2f} GB / – | {when} |")
            continue
        rows.append(f"| {w['description']} | {_fmt_ms(w['jaxnas_step_ms_median'])} | "
                    f"{_fmt_ms(w['torch_step_ms_median'])} | **{w['ratio_median']:.2f}×** "
                    f"({w['ratio_mean']:.2f} ± {w['ratio_se']:.2f}, {w['rounds']} rounds) | "
                    f"{first} / {t['start_to_first_step_s']:.1f} s | "
                    f"{j['peak_rss_mb'] / 1024:.2f} GB / {t['peak_rss_mb'] / 1024:.2f} GB | {when} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), help=f"default: {', '.join(DEFAULT_WORKLOADS)}")
    ap.add_argument("--dense", action="store_true", help="also darts8_dense (slow: minutes per step)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2, help="rounds before the recorded ones")
    ap.add_argument("--warm-start", action="store_true",
                    help="also time a second jaxnas start on the compilation cache the first one filled")
    ap.add_argument("--chunk", type=int, default=1,
                    help="steps per round: jaxnas runs them as one compiled call (a search's search.chunk, 50 by "
                         "default), PyTorch steps the same architectures one by one; per-step times are reported")
    ap.add_argument("--cold-apart", action="store_true",
                    help="the cold jaxnas start in a process of its own (stopped after its first step), the rounds in "
                         "a second one started on the cache it filled (its start: the warm start); for darts8_dense, "
                         "whose compile memory beside PyTorch's exceeds 24 GB")
    ap.add_argument("--no-retain-host-memory", action="store_true",
                    help="the jaxnas worker without jaxnas.core.host_memory.retain_in_process() (default: with it, as "
                         "`jaxnas search` runs); PyTorch as users run it")
    ap.add_argument("--merge", action="store_true",
                    help="keep the workloads of an existing --out that this run does not measure (each is stamped "
                         "with its own commit, time and load)")
    ap.add_argument("--cores", default=None, help="taskset core list for both workers (default: all, e.g. 0,1)")
    ap.add_argument("--torch-threads", type=int, default=None, help="default: the number of pinned cores")
    ap.add_argument("--no-torch", action="store_true", help="the jaxnas side only (default when torch is missing)")
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--cells", type=int, default=5, help="NB201 cells per stage")
    ap.add_argument("--num-cells", type=int, default=8, help="DARTS cells")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--smoke", action="store_true",
                    help="tiny: C 4, 1 cell per stage, 2 rounds, no warm-up, the NB201 workloads")
    ap.add_argument("--out", default=str(RESULTS))
    # worker-side arguments
    ap.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return (jax_worker if args.worker == "jax" else torch_worker)(args)

    if args.smoke:
        args.C, args.cells, args.rounds, args.warmup = 4, 1, 2, 0
        args.workloads = args.workloads or list(SMOKE_WORKLOADS)
    workloads = list(args.workloads or DEFAULT_WORKLOADS)
    if args.dense and "darts8_dense" not in workloads:
        workloads.append("darts8_dense")
    if args.cores is None:
        args.cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    ncores = sum(len(range(int(a), int(b) + 1)) if "-" in p else 1
                 for p in args.cores.split(",") for a, b in [p.split("-") if "-" in p else (p, p)])
    args.torch_threads = args.torch_threads or ncores
    if not args.no_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch is not importable: the jaxnas side only (pip install 'jaxnas[bench]')", file=sys.stderr)
            args.no_torch = True
    results = {"meta": {**_machine(args), "load_average_before": list(os.getloadavg()),
                        "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                        "batch": args.batch, "input": [32, 32, 3],
                        "data": "random uint8 images and random labels (the step cost does not depend on them), "
                                "no augmentation on either side",
                        "protocol": f"{args.rounds} paired rounds after {args.warmup} warm-up rounds, order "
                                    f"alternating, {args.chunk} step(s) per round (one compiled call on the jaxnas "
                                    "side), a new architecture every step (the jaxnas strategy's)",
                        "nb201": {"C": args.C, "cells_per_stage": args.cells},
                        "darts": {"C": args.C, "num_cells": args.num_cells},
                        "smoke": args.smoke, "torch_ran": not args.no_torch,
                        "jaxnas_retained_host_memory": not args.no_retain_host_memory},
               "workloads": {}}
    out = Path(args.out)
    if args.merge and out.exists():   # the other workloads as they were measured (meta: this run's machine)
        old = json.loads(out.read_text())
        stamp = {k: old["meta"].get(k) for k in ("git", "utc", "cores_pinned")}
        results["workloads"] = {k: {**stamp, **w} for k, w in old["workloads"].items() if k not in workloads}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vs_pytorch-") as tmp:
        data = make_images(Path(tmp) / "images.npz")
        for name in workloads:
            results["workloads"][name] = run_workload(name, args, data, tmp)
            print(json.dumps({name: results["workloads"][name]}), file=sys.stderr, flush=True)
            results["meta"]["load_average_after"] = list(os.getloadavg())
            out.write_text(json.dumps(results, indent=1))     # each workload as it lands
    print(table(results))


if __name__ == "__main__":
    main()
