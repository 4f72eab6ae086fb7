"""P(V) on the Volkert 9-layer space (TabNAS App. C): exact DP vs Monte-Carlo P̂(V), time and agreement.

Space: 9 hidden layers, widths TABNAS_WIDTHS_12 (8..160, 12 choices: 5.2e9 architectures), 180 inputs,
10 classes; budget 100,000 parameters. For the exact dynamic programme (jaxnas.strategies.budget
.AdjacentCostDP) and for P̂(V) (Alg. 2) with N = 1e4, 1e5, 1e6 (and 5e6, the paper's N for this
space), value+gradient w.r.t. the logits is jitted, compiled, then timed: median of ``--reps``
calls (each on different logits, after block_until_ready). Also records XLA temp memory and
checks that the MC estimate agrees with the exact value (z-score with the App. G.1 variance).

Writes bench/results/tabnas_pv.json and prints it as the last line. Run: ``python bench/tabnas_pv.py``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxnas.spaces.mlp import TABNAS_WIDTHS_12, MLPSpace  # noqa: E402
from jaxnas.strategies.budget import make_budget  # noqa: E402


def timed(fn, args_list):
    """(median s, min s) over calls, each blocked until ready; the first call compiles."""
    ts = []
    for a in args_list:
        t = time.perf_counter()
        jax.block_until_ready(fn(*a))
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--budget", type=float, default=100_000)
    p.add_argument("--mc", type=int, nargs="*", default=[10_000, 100_000, 1_000_000, 5_000_000])
    args = p.parse_args(argv)

    space = MLPSpace.create(9, 180, 10, widths=TABNAS_WIDTHS_12)
    budget = make_budget(space, args.budget)
    dp = budget.exact
    key = jax.random.key(0)
    logits_list = [0.3 * jax.random.normal(jax.random.fold_in(key, i), space.shape)
                   for i in range(args.reps + 1)]
    res = dict(space=dict(layers=9, widths=list(TABNAS_WIDTHS_12), inputs=180, outputs=10,
                          num_archs=space.num_archs),
               budget=args.budget, min_cost=budget.min_cost,
               device=str(jax.devices()[0]), cpu=platform.processor() or platform.machine(),
               reps=args.reps)

    f_exact = jax.jit(jax.value_and_grad(dp))
    t0 = time.perf_counter()
    compiled = f_exact.lower(logits_list[0]).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(f_exact(logits_list[0]))
    med, mn = timed(f_exact, [(l,) for l in logits_list[1:]])
    pv_ref, _ = f_exact(logits_list[0])
    res["exact_dp"] = dict(method=budget.exact_method, cost_bins=dp.num_bins, gcd=dp.gcd,
                           compile_s=round(compile_s, 2), value_and_grad_ms_median=round(1e3 * med, 3),
                           value_and_grad_ms_min=round(1e3 * mn, 3),
                           temp_bytes=int(compiled.memory_analysis().temp_size_in_bytes),
                           pv_at_logits0=float(pv_ref), under_100ms=bool(med < 0.1))

    res["mc"] = {}
    for n in args.mc:
        f_mc = jax.jit(lambda k, l, n=n: jax.value_and_grad(lambda l_: budget.pv_mc(k, l_, n))(l))
        t0 = time.perf_counter()
        compiled = f_mc.lower(key, logits_list[0]).compile()
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(f_mc(key, logits_list[0]))
        reps = args.reps if n <= 1_000_000 else max(3, args.reps // 4)
        med, mn = timed(f_mc, [(jax.random.fold_in(key, 100 + i), logits_list[1 + i])
                               for i in range(reps)])
        est, _ = f_mc(jax.random.key(7), logits_list[0])
        sd = float(np.sqrt(float(pv_ref) * (1 - float(pv_ref)) / n))    # App. G.1, q = sg(p)
        res["mc"][str(n)] = dict(value_and_grad_ms_median=round(1e3 * med, 3),
                                 value_and_grad_ms_min=round(1e3 * mn, 3), reps=reps,
                                 compile_s=round(compile_s, 2),
                                 temp_bytes=int(compiled.memory_analysis().temp_size_in_bytes),
                                 estimate=float(est), z_vs_exact=round((float(est) - float(pv_ref)) / sd, 2))
    out = ROOT / "bench" / "results" / "tabnas_pv.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
