"""Pictures of found architectures (``jaxnas.report.draw``, ``jaxnas report``), drawn with matplotlib
alone (a pure-Python renderer already installed with jaxnas: no graphviz binary to find on a fresh
machine or a Colab TPU VM).

- cell spaces (DARTS, NAS-Bench-201) and recurrent cells: the cell as a graph in the DARTS authors'
  conventions (``visualize.py``): input nodes on the left (``c_{k-2}``, ``c_{k-1}``; NB201's one input;
  the recurrent cell's ``x_t, h_{t-1}``), intermediate nodes numbered from 0, one arrow per kept edge
  labelled with its op (``none`` edges are not drawn), and the output node (DARTS: the concatenation of
  the intermediate nodes; the recurrent cell: their mean; NB201: the last node). One panel per block
  (DARTS: normal and reduction cells; unique cells: one per cell);
- MLP: the layer widths as bars, input to logits;
- MA2ML pipelines: the three agents' choices (augmentation policy, cell, hyper-parameters), the cell
  drawn as above.

Every node is an SVG element with id ``node-<panel>-<name>`` (tests count them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

_NODE = dict(boxstyle="round,pad=0.35", lw=1.0)
_COLORS = {"input": "#8fbcd4", "mid": "#e8d9a0", "output": "#a8d5a2"}


def pyplot():
    """matplotlib's pyplot (imported on use: matplotlib is the plots extra): the file-only Agg backend,
    unless pyplot is already in use or the backend is a notebook's (then its figures still show)."""
    import sys

    import matplotlib
    if "matplotlib.pyplot" not in sys.modules and "inline" not in str(matplotlib.get_backend()).lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def cell_graph(space, ops_idx, panel: str = "cell") -> dict:
    """Nodes ``[(name, label, kind)]`` and edges ``[(src, dst, op, style)]`` of one cell of ``space``
    (a cell space or the recurrent cell space) with op indices ``ops_idx`` (its edges, in order)."""
    n_in = int(getattr(space, "num_input_nodes", 1))
    n_mid = int(space.num_nodes)
    recurrent = not hasattr(space, "num_input_nodes")
    concat = recurrent or n_in == 2                                   # DARTS / recurrent: all intermediates
    if recurrent:
        inputs = [("in0", "x_t, h_{t-1}")]
    elif n_in == 2:
        inputs = [("in0", "c_{k-2}"), ("in1", "c_{k-1}")]
    else:
        inputs = [("in0", "in")]
    nodes = [(name, label, "input") for name, label in inputs]
    first_mid = 1 if recurrent or n_in == 1 else 0               # NB201 / recurrent: nodes 1..N; DARTS: 0..3
    nid = lambda j: inputs[j][0] if j < n_in else f"n{j - n_in}"   # noqa: E731
    for j in range(n_in, n_in + n_mid):
        last = j == n_in + n_mid - 1 and not concat
        nodes.append((nid(j), "out" if last else str(j - n_in + first_mid), "output" if last else "mid"))
    edges = []
    zero = getattr(space, "zero_op", None)
    for e, (j, i) in enumerate(space.edges):
        k = int(ops_idx[e])
        if zero is not None and k == zero:
            continue
        edges.append((nid(i), nid(j), space.ops[k], "-"))
    if concat:
        out = "h_t" if recurrent else "c_{k}"
        nodes.append(("out", out, "output"))
        edges += [(nid(j), "out", "", ":") for j in range(n_in, n_in + n_mid)]
    return {"panel": panel, "nodes": nodes, "edges": edges}


def _layout(g: dict) -> tuple[dict, dict]:
    """Inputs stacked on the left, intermediate nodes left to right alternating up and down, the
    output on the right."""
    ins = [n for n, _, k in g["nodes"] if k == "input"]
    mids = [n for n, _, k in g["nodes"] if k == "mid"]
    outs = [n for n, _, k in g["nodes"] if k == "output"]
    xs, ys = {}, {}
    for i, n in enumerate(ins):
        xs[n], ys[n] = 0.0, (0.0 if len(ins) == 1 else 0.9 - 1.8 * i / (len(ins) - 1))
    for i, n in enumerate(mids):
        xs[n], ys[n] = 1.0 + i, (0.55 if i % 2 == 0 else -0.55)
    for n in outs:
        xs[n], ys[n] = 1.0 + len(mids), 0.0
    return xs, ys


def _draw_graph(ax, g: dict) -> None:
    xs, ys = _layout(g)
    for s, d, op, style in g["edges"]:
        ax.annotate("", xy=(xs[d], ys[d]), xytext=(xs[s], ys[s]),
                    arrowprops=dict(arrowstyle="-|>", lw=0.9, ls=style, color="#555", shrinkA=13, shrinkB=13))
        if op:   # the label a third of the way from the source: labels of one target's edges part
            t = 0.38
            ax.text(xs[s] + t * (xs[d] - xs[s]), ys[s] + t * (ys[d] - ys[s]), op, fontsize=6.5, ha="center",
                    va="center", color="#223", bbox=dict(boxstyle="round,pad=0.12", fc="white", ec="none", alpha=0.9))
    for n, label, kind in g["nodes"]:
        t = ax.text(xs[n], ys[n], label, ha="center", va="center", fontsize=9,
                    bbox=dict(fc=_COLORS[kind], ec="#333", **_NODE))
        t.set_gid(f"node-{g['panel']}-{n}")
    ax.set_xlim(-0.7, max(xs.values()) + 0.7)
    ax.set_ylim(-1.3, 1.3)
    ax.set_title(g["panel"], fontsize=10)
    ax.axis("off")


def graphs(arch, space) -> list[dict]:
    """The cell graphs of ``arch`` in ``space`` (one per block), or [] for a space without cells."""
    arch = np.asarray(arch, np.int32)
    if hasattr(space, "edges_per_cell"):                        # DARTS / NAS-Bench-201 cell spaces
        blocks = arch.reshape(space.num_blocks, space.edges_per_cell)
        names = list(getattr(space, "block_names", ())) or ["cell"]
        return [cell_graph(space, b, names[i] if i < len(names) else f"cell {i}") for i, b in enumerate(blocks)]
    if hasattr(space, "num_nodes") and hasattr(space, "edges"):  # the recurrent cell
        return [cell_graph(space, arch, "recurrent cell")]
    return []


def draw(arch, space, path=None, title: Optional[str] = None):
    """The picture of ``arch`` in ``space`` as a matplotlib figure; with ``path``, also written as
    ``path`` with suffixes ``.png`` and ``.svg``. Returns the figure."""
    plt = pyplot()
    arch = np.asarray(arch, np.int32)
    pipeline = hasattr(space, "agents") and hasattr(space, "subspaces")
    if pipeline:                                                   # an MA2ML pipeline: axes placed by hand
        fig = _draw_pipeline(plt, arch, space)
    elif hasattr(space, "max_widths") or hasattr(space, "arch_widths"):
        fig = _draw_mlp(plt, arch, space)
    else:
        gs = graphs(arch, space)
        if not gs:
            raise ValueError(f"no drawing for a {type(space).__name__}")
        cols = min(len(gs), 2)
        rows = -(-len(gs) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 2.6 * rows), squeeze=False)
        for ax, g in zip(axes.flat, gs):
            _draw_graph(ax, g)
        for ax in list(axes.flat)[len(gs):]:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    if not pipeline:
        fig.tight_layout()
    if path is not None:
        p = Path(path)
        for suffix in (".png", ".svg"):
            fig.savefig(p.with_suffix(suffix), dpi=110)
    return fig


def _draw_mlp(plt, arch, space):
    widths = [int(w) for w in np.asarray(space.arch_widths(arch)).reshape(-1)]
    layers = [("input", int(space.num_inputs))] + [(f"hidden {i}", w) for i, w in enumerate(widths)] + \
        [("logits", int(space.num_outputs))]
    fig, ax = plt.subplots(figsize=(1.4 * len(layers) + 1, 3.2))
    top = max(w for _, w in layers)
    for i, (name, w) in enumerate(layers):
        bar = ax.bar(i, w / top, width=0.5, color=_COLORS["input" if i == 0 else "output" if i == len(layers) - 1
                                                           else "mid"], edgecolor="#333")
        bar.patches[0].set_gid(f"node-mlp-{i}")
        ax.text(i, w / top + 0.03, str(w), ha="center", fontsize=9)
    ax.set_xticks(range(len(layers)), [n for n, _ in layers], fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(0, 1.2)
    ax.set_title(f"MLP {space.encode(arch)}", fontsize=10)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return fig


def _draw_pipeline(plt, arch, space):
    described = space.describe(arch)["agents"]
    cells = []
    for name, sub, (i, j) in zip(space.agents, space.subspaces, space.agent_slices):
        cells += [(name, g) for g in graphs(arch[i:j], sub)]
    fig = plt.figure(figsize=(7.5, 2.2 + 2.6 * max(len(cells), 1)))
    text = "\n".join(f"{name}: {described[name]}" for name in space.agents)
    fig.text(0.02, 0.98, text, va="top", ha="left", fontsize=8, family="monospace", wrap=True)
    for k, (name, g) in enumerate(cells):
        ax = fig.add_axes([0.03, 0.05 + (len(cells) - 1 - k) * 0.8 / len(cells), 0.94, 0.7 / len(cells)])
        g = {**g, "panel": f"{name} {g['panel']}"}
        _draw_graph(ax, g)
    return fig
