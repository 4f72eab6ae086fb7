"""Summary and plots of a search work dir: any logged metric over time, per-decision choice
frequencies and the policy entropy.

``metrics.jsonl`` has one row per step: ``step``, ``phase`` and one key per metric, namespaced by its
source (``weights/train_loss``, ``strategy/reward``, ``strategy/pv``, ``policy/entropy`` per decision,
``sample/arch`` [samples, D]). ``--metrics pv,feasible`` plots those (a bare name matches any namespace).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from jaxnas.core.workdir import read_metrics, writable
from jaxnas.drawing import draw, pyplot


def load_metrics(workdir, notes: list | None = None) -> list[dict]:
    """The rows of ``metrics.jsonl``; a torn last line (a kill during a write) is skipped and said:
    appended to ``notes`` when given, else printed on stderr."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a jaxnas search work dir?")
    rows, note = read_metrics(path)
    if note:
        if notes is None:
            print(f"jaxnas: {note}", file=sys.stderr)
        else:
            notes.append(note)
    return rows


def metric_names(rows) -> list[str]:
    names = []
    for r in rows:
        names.extend(k for k in r if k not in ("step", "phase") and k not in names)
    return names


def resolve_metrics(rows, wanted) -> list[str]:
    """Full names of ``wanted`` (``pv`` finds ``strategy/pv``); unknown names raise with the list."""
    names = metric_names(rows)
    out = []
    for w in wanted:
        hits = [n for n in names if n == w or n.split("/")[-1] == w]
        if not hits:
            raise ValueError(f"no metric {w!r} in metrics.jsonl; logged: {', '.join(names)}")
        out.extend(h for h in hits if h not in out)
    return out


def series(rows, name):
    """(steps, values) of the rows that logged ``name``."""
    pts = [(r["step"], r[name]) for r in rows if name in r]
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float)


def policy_lines(policy) -> list[str]:
    """Human-readable lines of ``result.json["policy"]`` (a strategy's summary, e.g. TabNAS's):
    the final choice's probability under the policy, P(V), the mode of P(y | y in V), the Alg. 3
    candidates, the entropy per decision, and the warnings."""
    if not policy:
        return []
    fmt = lambda p: "n/a" if p is None else f"{p:.3g}"

    def arch(d):
        return (f"{d['arch']} (cost {d['cost']:g}, P(y) {fmt(d['prob'])}, "
                f"P(y | y in V) {fmt(d['prob_given_feasible'])})")
    lines = [f"final rule {policy['final_rule']!r}: {arch(policy['chosen'])}",
             f"P(V) = {fmt(policy['pv'])} ({policy['pv_method']}), budget {policy['budget']:g}",
             f"mode of P(y | y in V){'' if policy['mode'].get('exact') else ' (sampled)'}: "
             f"{arch(policy['mode'])}"]
    cands = policy.get("alg3_candidates", [])
    lines.append(f"Alg. 3 top-{len(cands)} of {policy.get('alg3_samples')} samples (retrain these):")
    lines.extend(f"  {i + 1}. {arch(c)}" for i, c in enumerate(cands))
    lines.append(f"entropy per decision: {policy['entropy_per_decision']} "
                 f"(uniform: {policy['max_entropy_per_decision']})")
    lines.extend(f"warning: {w}" for w in policy.get("warnings", []))
    return lines


def report(workdir, plots: bool = True, metrics=None) -> str:
    workdir = Path(workdir)
    notes: list[str] = []
    rows = load_metrics(workdir, notes)
    result_path = workdir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    lines = [f"work dir: {workdir}", *(f"note: {n}" for n in notes), f"steps logged: {len(rows)}"]
    wanted = resolve_metrics(rows, metrics) if metrics else []
    if rows:
        tail = rows[-min(100, len(rows)):]
        scalars = [n for n in metric_names(tail)
                   if all(np.ndim(r[n]) == 0 for r in tail if n in r)]
        for n in (wanted or [n for n in scalars if n in ("weights/train_loss", "strategy/reward")]):
            _, v = series(tail, n)
            lines.append(f"last {len(tail)} steps: {n} mean {np.mean(v):.4f}")
        _, ent = series(rows, "policy/entropy")
        if len(ent):
            lines.append(f"policy entropy per decision: start {np.round(ent[0], 3).tolist()} "
                         f"end {np.round(ent[-1], 3).tolist()}")
    if result:
        lines.append(f"derived architecture: {result.get('arch')}")
        rated = {k: v for k, v in result.items() if isinstance(v, float) and k != "search_seconds"}
        lines.append("result: " + ", ".join(f"{k} {v:.4f}" for k, v in rated.items()))
        lines.extend(policy_lines(result.get("policy")))
    else:
        lines.append("no result.json yet: the search has not finished (re-run `jaxnas search` to resume)")
    if plots and (rows or result) and not writable(workdir):   # a finished run kept read-only: say, draw nothing
        lines.append(f"plots: none drawn, {workdir} is read-only for this process (they are saved in the work "
                     f"dir): report a writable copy of it to draw them, or pass --no-plots")
        plots = False
    if plots and rows:
        lines.extend(f"plot: {p}" for p in save_plots(workdir, rows, wanted))
    if plots and result and "arch_indices" in result:
        lines.append(draw_result(workdir, result))
    return "\n".join(lines)


def draw_result(workdir, result: dict) -> str:
    """Draws the derived architecture of ``workdir`` to ``arch.png`` / ``arch.svg`` (the space from
    its config; data loaded only where the space needs it, e.g. an MLP's input width)."""
    from jaxnas.config.experiment import build_space, load_data
    cfg = json.loads((Path(workdir) / "config.json").read_text())
    try:
        space = build_space(cfg, None)
    except Exception:  # noqa: BLE001  (a space that needs its data: MLP input width, a vocabulary)
        space = build_space(cfg, load_data(cfg))
    path = Path(workdir) / "arch"
    try:
        fig = draw(np.asarray(result["arch_indices"], np.int32), space, path, title=str(result.get("arch")))
    except ImportError:
        return "picture: none (matplotlib is not installed: pip install 'jaxnas[plots]')"
    pyplot().close(fig)
    return f"picture: {path.with_suffix('.png')} (and .svg)"


def save_metric_plot(workdir, rows, names, window: int = 100) -> Path:
    """One panel per metric over steps (vector metrics: one line per entry); scalar metrics also get
    their running mean over ``window`` steps (per-step values such as ``feasible`` are 0/1)."""
    plt = pyplot()
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 2.4 * len(names)), squeeze=False, sharex=True)
    for ax, n in zip(axes[:, 0], names):
        steps, v = series(rows, n)
        v = v.reshape(len(steps), -1)
        if v.shape[1] == 1 and len(steps) >= window:
            ax.plot(steps, v, lw=0.5, alpha=0.3)
            ax.plot(steps[window - 1:], np.convolve(v[:, 0], np.ones(window) / window, mode="valid"),
                    lw=1.2, label=f"{window}-step mean")
            ax.legend(fontsize=6)
        else:
            ax.plot(steps, v, lw=0.8)
        ax.set_ylabel(n, fontsize=8)
    axes[-1, 0].set_xlabel("step")
    p = Path(workdir) / "metrics.png"
    fig.tight_layout(); fig.savefig(p, dpi=100); plt.close(fig)
    return p


def save_plots(workdir, rows, metrics=(), window: int = 100) -> list[Path]:
    """The requested metrics, the entropy per decision, and the running frequency of each choice of
    the sampled architectures (a window of ``window`` steps, all samples of a step)."""
    plt = pyplot()
    out = []
    if metrics:
        out.append(save_metric_plot(workdir, rows, list(metrics)))
    steps, ent = series(rows, "policy/entropy")
    if len(steps):
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(steps, ent)
        ax.set_xlabel("step"); ax.set_ylabel("entropy per decision (nats)")
        ax.set_title("policy entropy")
        p = Path(workdir) / "entropy.png"
        fig.tight_layout(); fig.savefig(p, dpi=100); plt.close(fig); out.append(p)
    rows = [r for r in rows if "sample/arch" in r]
    if not rows:
        return out
    steps = np.array([r["step"] for r in rows])
    archs = np.array([r["sample/arch"] for r in rows])       # [T, samples, D]
    D = archs.shape[2]
    K = int(archs.max()) + 1
    cols = min(D, 4)
    nrows = -(-D // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.4 * nrows), squeeze=False)
    window = max(1, min(window, len(steps)))    # a run shorter than the window: one window over all of it
    kernel = np.ones(window) / window
    for d in range(D):
        ax = axes[d // cols][d % cols]
        for k in range(K):
            per_step = np.mean(archs[:, :, d] == k, axis=1)
            freq = np.convolve(per_step, kernel, mode="valid")
            if freq.size and freq.max() > 0.05:
                ax.plot(steps[window - 1:], freq, label=str(k))
        ax.set_title(f"decision {d}", fontsize=8); ax.set_ylim(0, 1)
        ax.legend(fontsize=6)
    for d in range(D, nrows * cols):
        axes[d // cols][d % cols].axis("off")
    fig.suptitle(f"sampled-choice frequency ({window}-step window)")
    p = Path(workdir) / "choices.png"
    fig.tight_layout(); fig.savefig(p, dpi=100); plt.close(fig); out.append(p)
    return out
