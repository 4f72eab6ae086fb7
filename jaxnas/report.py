"""Summary and plots of a search work dir: per-decision choice frequencies and entropy over time."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def load_metrics(workdir) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a jaxnas search work dir?")
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def report(workdir, plots: bool = True) -> str:
    workdir = Path(workdir)
    rows = load_metrics(workdir)
    result_path = workdir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    lines = [f"work dir: {workdir}", f"steps logged: {len(rows)}"]
    if rows:
        tail = rows[-min(100, len(rows)):]
        lines.append(f"last {len(tail)} steps: train_loss {np.mean([r['train_loss'] for r in tail]):.4f}"
                     + (f", reward {np.mean([r['reward'] for r in tail if 'reward' in r]):.4f}"
                        if any('reward' in r for r in tail) else ""))
        ent = np.array([r["entropy"] for r in rows])
        lines.append(f"policy entropy per decision: start {np.round(ent[0], 3).tolist()} "
                     f"end {np.round(ent[-1], 3).tolist()}")
    if result:
        lines.append(f"derived architecture: {result.get('arch')} (val accuracy "
                     f"{result.get('val_accuracy', float('nan')):.4f}, val loss {result.get('val_loss', float('nan')):.4f})")
    else:
        lines.append("no result.json yet: the search has not finished (re-run `jaxnas search` to resume)")
    if plots and rows:
        lines.extend(f"plot: {p}" for p in save_plots(workdir, rows))
    return "\n".join(lines)


def save_plots(workdir, rows, window: int = 100) -> list[Path]:
    """Entropy per decision, and the running frequency of each choice of the sampled architectures
    (a window of ``window`` steps): how the search's distribution moves over time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in rows])
    ent = np.array([r["entropy"] for r in rows])
    archs = np.array([r["arch"] for r in rows])
    out = []
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, ent)
    ax.set_xlabel("step"); ax.set_ylabel("entropy per decision (nats)")
    ax.set_title("policy entropy")
    p = Path(workdir) / "entropy.png"
    fig.tight_layout(); fig.savefig(p, dpi=100); plt.close(fig); out.append(p)
    D = archs.shape[1]
    K = int(archs.max()) + 1
    cols = min(D, 4)
    nrows = -(-D // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.4 * nrows), squeeze=False)
    kernel = np.ones(window) / window
    for d in range(D):
        ax = axes[d // cols][d % cols]
        for k in range(K):
            freq = np.convolve((archs[:, d] == k).astype(float), kernel, mode="valid")
            if freq.max() > 0.05:
                ax.plot(steps[window - 1:] if len(steps) >= window else steps[:len(freq)], freq, label=str(k))
        ax.set_title(f"decision {d}", fontsize=8); ax.set_ylim(0, 1)
        ax.legend(fontsize=6)
    for d in range(D, nrows * cols):
        axes[d // cols][d % cols].axis("off")
    fig.suptitle(f"sampled-choice frequency ({window}-step window)")
    p = Path(workdir) / "choices.png"
    fig.tight_layout(); fig.savefig(p, dpi=100); plt.close(fig); out.append(p)
    return out
