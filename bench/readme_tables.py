"""The benchmark tables of README.md and the docs site, regenerated from ``bench/results/*.json``.

    python bench/readme_tables.py           # rewrite every generated section of every file
    python bench/readme_tables.py --check   # exit 1 if a section differs from its JSON (the CI test)

A generated section sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in README.md or
any ``docs/**/*.md`` (:func:`files`); NAME is a key of ``SECTIONS``, whose function renders the table
from its results file (a bench script's own ``markdown``, or a renderer here). Spreads over seeds are
mean ± s.e. with ddof = 1 (:func:`mean_se`) unless a header says otherwise.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
DOCS = REPO / "docs"
sys.path.insert(0, str(REPO / "bench"))


def _nb201_table() -> str:
    from nb201_table import markdown
    return markdown(json.loads((RESULTS / "nb201_table.json").read_text()))


def _supernet_ranking() -> str:
    from supernet_ranking import markdown
    return markdown(json.loads((RESULTS / "supernet_ranking.json").read_text()))


def _nb201_oneshot() -> str:
    from nb201_oneshot import markdown
    return markdown(json.loads((RESULTS / "nb201_oneshot.json").read_text()))


def _oneshot_v2() -> str:
    from oneshot_v2 import load, markdown_v2
    return markdown_v2(load(RESULTS / "nb201_oneshot.json"))


def _v2_protocol() -> str:
    from nb201_oneshot import DEFAULT_STRATEGIES
    v2 = json.loads((RESULTS / "nb201_oneshot.json").read_text()).get("v2") or {}
    if not v2.get("protocol"):
        return "No supernet protocol ranks cells yet: leaderboard v2 has not run."
    pr, n = v2["protocol"], sum(len(r["runs"]) for r in v2.get("strategies", {}).values())
    return (f"Leaderboard v2 protocol: {pr['source']} (Kendall tau of the supernet's validation accuracy "
            f"against the table's CIFAR-10 test accuracy, 200 uniform cells, 95 % bootstrap interval); "
            f"{n} of {pr['seeds'] * len(DEFAULT_STRATEGIES)} (strategy, seed) runs landed.")


def _manas_regret() -> str:
    from manas_regret import markdown
    return markdown(json.loads((RESULTS / "manas_regret.json").read_text()))


def _ma2ml_digits() -> str:
    r = json.loads((RESULTS / "ma2ml_digits.json").read_text())
    ms = r["methods"]
    base = ms.get("random")
    n = r["rounds"] * r["lanes"]
    units = f"{len(r.get('units', {}))} of {r['seeds'] * len(r['methods_run'])} (method, seed) units landed"
    if not ms:
        return f"No seed has finished for every method yet ({units})."
    seeds = len(next(iter(ms.values()))["seeds"])      # the seeds every method has finished
    out = [f"| method | best validation accuracy after {n} pipelines (mean ± s.e., {seeds} of {r['seeds']} seeds) | "
           f"minus random, paired | mean validation accuracy of all {n} pipelines it proposed | minus random, paired "
           "| s |", "|---|---|---|---|---|---|"]
    for name, m in ms.items():
        diff = mdiff = "–"
        if base is not None and name != "random":
            diff = _pm([a - b for a, b in zip(m["final_best_per_seed"], base["final_best_per_seed"])], 4)
            mdiff = _pm(m["mean_reward_minus_random"]["per_seed"], 4)
        mean, se = m["mean_reward_all_rounds"]
        out.append(f"| {name} | {_pm(m['final_best_per_seed'], 4)} | {diff} | "
                   f"{mean:.4f}" + (f" ± {se:.4f}" if seeds > 1 else "") + f" | {mdiff} | {float(m['seconds']):.0f} |")
    out.append(f"\n{units}; {r['steps_per_pipeline']} SGD steps per pipeline.")
    if r.get("note"):
        out.append(f"\nSize: {r['note']}.")
    return "\n".join(out)


def _vs_pytorch(name: str = "vs_pytorch", how: str = "", machine: bool = True) -> str:
    """A run of the comparison (``bench/results/<name>.json``) with its protocol line; ``machine``: the
    main table's line also names the CPU, jax and the load."""
    from vs_pytorch import table
    path = RESULTS / f"{name}.json"
    if how and not path.exists():
        return f"(not measured yet: `{how}`)"
    r = json.loads(path.read_text())
    m = r["meta"]
    where = f"{m['cpu_count']} cores ({m['cpu']}), " if machine else ""
    line = (f"{m['utc']} UTC, git {m['git']}, {where}cores pinned {m['cores_pinned']}, PyTorch {m['torch']} on "
            f"{m['torch_threads']} thread(s)")
    if machine:
        load = ", ".join(f"{x:.1f}" for x in m["load_average_before"])
        line += f", jax {m['jax']}; load average before ({load})"
    note = f" Runs: {m['note']}." if machine and m.get("note") else ""
    return table(r) + f"\n\n{line}; {m['protocol']}.{note}"


def _vs_pytorch_chunk50() -> str:
    """The comparison at the library's default 50 steps per compiled call (NB201 only)."""
    return _vs_pytorch("vs_pytorch_chunk50", "python bench/vs_pytorch.py --chunk 50 --workloads nb201_weights "
                                             "nb201_advantage_arch --out bench/results/vs_pytorch_chunk50.json",
                       machine=False)


def _vs_pytorch_chunk10() -> str:
    """The comparison at 10 steps per compiled call, as a search runs its steps."""
    return _vs_pytorch("vs_pytorch_chunk10", "python bench/vs_pytorch.py --chunk 10 "
                                             "--out bench/results/vs_pytorch_chunk10.json", machine=False)


def _host_memory_ab() -> str:
    """Each variant against glibc's default, process against process: the start-time tunables
    (host_memory_ab.json, before 2026-12-07) and the in-process form (host_memory_in_process.json)."""
    out = ["| workload | variant | step, default / variant | variant / default (median; mean ± s.e.) | minor faults "
           "a step, default / variant | cold compile, default / variant | pairs | git, load |",
           "|---|---|---|---|---|---|---|---|"]
    label = {"retained": "glibc tunables at start, one arena (before)", "in_process": "**in process (the default)**"}
    for f in ("host_memory_ab.json", "host_memory_in_process.json"):
        for name, w in json.loads((RESULTS / f).read_text()).items():
            # rows written before the per-variant keys hold the one variant "retained" as step_ratio
            ratios = w.get("step_ratio_over_default") or {"retained": w["step_ratio"]}
            compiles = w.get("compile_ratio_over_default") or {"retained": w["compile_ratio"]}
            for v, s in ratios.items():
                out.append(f"| {name} | {label[v]} | {w['step_ms']['default']:,.0f} / {w['step_ms'][v]:,.0f} ms | "
                           f"**{s['median']:.3f}** ({s['mean']:.3f} ± {s['se']:.3f}) | "
                           f"{w['faults_per_step']['default']:,.0f} / {w['faults_per_step'][v]:,.0f} | "
                           f"{w['compile_s']['default']:.1f} / {w['compile_s'][v]:.1f} s "
                           f"({compiles[v]['median']:.2f}×) | {w['pairs']} | {w['git']}, "
                           f"{w['load_average_before'][0]:.1f} |")
    return "\n".join(out)


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error (ddof = 1) of per-seed values."""
    v = [float(x) for x in values]
    n = len(v)
    m = sum(v) / n
    if n < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in v) / (n - 1)
    return m, (var / n) ** 0.5


def _pm(values, digits: int) -> str:
    m, s = mean_se(values)
    return f"{m:.{digits}f}" if len(values) < 2 else f"{m:.{digits}f} ± {s:.{digits}f}"   # one seed: no s.e.


def _load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _ptb_tiny() -> str:
    """AdvantageNAS sec. 5.3 at CPU size: per strategy the retrained cells' perplexities over seeds."""
    r = _load("ptb_tiny")
    rows = []
    for name, s in r["strategies"].items():
        val = [run["val_perplexity"] for run in s["runs"]]
        test = [run["test_perplexity"] for run in s["runs"]]
        t3 = s.get("table3")
        pub = f"{t3['val'][0]:.2f} / {t3['test'][0]:.2f}" if t3 else "–"
        rows.append((mean_se(val)[0], f"| {name} | {s['final']} | {len(val)} | {_pm(val, 1)} | {_pm(test, 1)} | {pub} |"))
    head = ("| strategy | final rule | seeds | val perplexity (mean ± s.e.) | test perplexity (mean ± s.e.) "
            "| Table 3 val / test (App. E size) |\n|---|---|---|---|---|---|")
    return "\n".join([head] + [row for _, row in sorted(rows, key=lambda x: x[0])])


def _tabnas_connect4() -> str:
    """TabNAS on Connect-4: per budget and RL lr, the searches' choices and the retrained answers."""
    r = _load("tabnas_connect4")
    out = ["| budget | best in budget (val loss ± std, 3 trainings) | method | Alg. 3 choice per seed | concentrated "
           "| answer after retrain per seed | answer's stand-alone val loss (mean ± s.e.) | within 2 std |",
           "|---|---|---|---|---|---|---|---|"]
    for b in r["budgets"]:
        best = f"{b['best']['arch']} {b['best']['val_loss_mean']:.4f} ± {b['best']['val_loss_std']:.4f}"
        methods = []
        for s in b["searches"]:
            if s["method"] not in methods:
                methods.append(s["method"])
        for meth in methods:
            runs = sorted((s for s in b["searches"] if s["method"] == meth), key=lambda s: s["seed"])
            chosen = ", ".join(s["arch"] for s in runs)
            conc = sum(bool(s["policy"]["concentrated"]) for s in runs)
            answers = ", ".join(s["retrain"]["answer"] for s in runs)
            losses = [s["retrain"]["answer_standalone_val_loss_mean"] for s in runs]
            within = sum(bool(s["retrain"]["answer_within_2std_of_best"]) for s in runs)
            out.append(f"| {b['budget']:,}: {b['where']} | {best} | {meth} | {chosen} | {conc} of {len(runs)} "
                       f"| {answers} | {_pm(losses, 4)} | {within} of {len(runs)} |")
    return "\n".join(out)


def _shapley_kendall() -> str:
    """Shapley-NAS vs DARTS alpha as op rankers (NB201 Fig. 2 setting): mean per-edge Kendall tau per seed."""
    r = _load("shapley_kendall")
    out = ["| seed | V(N) (val acc) | mean tau, DARTS alpha | mean tau, Shapley phi |",
           "|---|---|---|---|"]
    ta, tp = [], []
    for run in r["runs"]:
        d = run["darts"]
        ta.append(d["mean_tau_alpha"])
        tp.append(d["mean_tau_phi"])
        out.append(f"| {run['seed']} | {d['V_N']:.3f} | {d['mean_tau_alpha']:+.3f} | {d['mean_tau_phi']:+.3f} |")
    out.append(f"| mean ± s.e. | – | {_pm(ta, 3)} | {_pm(tp, 3)} |")
    return "\n".join(out)


def _ma2ml_synthetic() -> str:
    """The MA2ML pipeline game: best-so-far / optimum after the last round (mean ± s.e. over seeds)."""
    r = _load("ma2ml_synthetic")
    out = [f"| method | best / optimum after {r['methods'][next(iter(r['methods']))]['evaluated'][-1]} pipelines "
           f"(mean ± s.e., {r['seeds']} seeds) | top-{r['topk']} distinct (mean ± s.e.) | found the optimum "
           "| rounds to 0.97: median (fraction reached) | s |",
           "|---|---|---|---|---|---|"]
    rows = []
    for name, m in r["methods"].items():
        rt = m["rounds_to_0.97"]
        med = "never" if rt["median"] == float("inf") else f"{rt['median']:g}"
        rows.append((-m["best_mean"][-1],
                     f"| {name} | {m['best_mean'][-1]:.3f} ± {m['best_se'][-1]:.3f} | {m['topk_mean'][-1]:.3f} ± "
                     f"{m['topk_se'][-1]:.3f} | {m['found_optimum']:.2f} | {med} ({rt['fraction_reached']:.2f}) "
                     f"| {m['seconds']:.0f} |"))
    return "\n".join(out + [row for _, row in sorted(rows, key=lambda x: x[0])])


def _ma2ml_cifar_tiny() -> str:
    """MA2ML on real CIFAR-10-subset pipelines: best reward so far per round, mean over the seeds."""
    r = _load("ma2ml_cifar_tiny")
    rounds = r["rounds"]
    out = ["| method | " + " | ".join(f"best after round {i + 1} (mean of {r['seeds']} seeds)" for i in range(rounds))
           + " | best pipeline found (reward) | s |",
           "|---|" + "---|" * (rounds + 2)]
    for name, m in r["methods"].items():
        cells = " | ".join(f"{v:.4f}" for v in m["best_so_far_mean"])
        out.append(f"| {name} | {cells} | {m['best_reward']:.4f} | {m['seconds']:.0f} |")
    return "\n".join(out)


SECTIONS = {"nb201_table": _nb201_table, "manas_regret": _manas_regret, "supernet_ranking": _supernet_ranking,
            "nb201_oneshot": _nb201_oneshot, "ptb_tiny": _ptb_tiny, "tabnas_connect4": _tabnas_connect4,
            "shapley_kendall": _shapley_kendall, "ma2ml_synthetic": _ma2ml_synthetic,
            "ma2ml_cifar_tiny": _ma2ml_cifar_tiny, "vs_pytorch": _vs_pytorch,
            "host_memory_ab": _host_memory_ab,
            "vs_pytorch_chunk10": _vs_pytorch_chunk10, "vs_pytorch_chunk50": _vs_pytorch_chunk50,
            "ma2ml_digits": _ma2ml_digits, "oneshot_v2": _oneshot_v2, "v2_protocol": _v2_protocol}
_SECTION = re.compile(r"(<!-- bench:(\w+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)


def render(text: str) -> str:
    """``text`` (README.md or a docs page) with every generated section rendered from its JSON."""
    cache: dict[str, str] = {}

    def one(m):
        name = m.group(2)
        if name not in SECTIONS:
            raise KeyError(f"section bench:{name} has no generator in bench/readme_tables.py")
        if name not in cache:
            cache[name] = SECTIONS[name]().rstrip("\n")
        return m.group(1) + cache[name] + "\n" + m.group(4)
    return _SECTION.sub(one, text)


def sections(text: str) -> list[str]:
    return [m.group(2) for m in _SECTION.finditer(text)]


def files() -> list[Path]:
    """Every file with generated sections: README.md and the docs pages (``docs/**/*.md``)."""
    candidates = [README] + sorted(DOCS.rglob("*.md"))
    return [p for p in candidates if p.is_file() and sections(p.read_text())]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="compare only; exit 1 when a section is stale")
    args = p.parse_args(argv)
    stale = []
    for path in files():
        old = path.read_text()
        new = render(old)
        if args.check:
            if new != old:
                stale.append(path.relative_to(REPO))
            continue
        if new != old:
            path.write_text(new)
        print(f"rendered {', '.join(sections(new))} in {path.relative_to(REPO)}")
    if stale:
        print(f"generated tables differ from bench/results in {', '.join(map(str, stale))}: "
              "run python bench/readme_tables.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
