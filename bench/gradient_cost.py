"""Cost of one architecture step of every gradient baseline on the AdvantageNAS toy supernet (sec. 5.1:
10 edges x 10 convolutions, batch 100): steps per second (jit + lax.scan, best of 3) and the compiled
step's temporary memory (``memory_analysis().temp_size_in_bytes``). Sparse methods (GDAS, ProxylessNAS,
AdvantageNAS) should cost about one architecture; dense ones (DARTS, SNAS, NASP) about K = 10 of them.

Run: ``python bench/gradient_cost.py`` (about a minute on 2 CPU cores). Writes
bench/results/gradient_cost.json and prints it as the last line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxnas.models.supernets import toy  # noqa: E402
from jaxnas.strategies import available, make  # noqa: E402

METHODS = ["darts", "snas", "nasp", "gdas", "proxyless", "advantage", "reinforce"]


def measure(name, iters, batch, reps=3):
    space = toy.toy_space()
    strat = make(name, space, total_steps=iters)
    task = toy.make_task(jax.random.key(0))
    x = toy.sample_inputs(jax.random.key(1), batch)
    rf = toy.reward_fn(task, x, mode=strat.mode)

    one = jax.jit(lambda s, k: strat.step(s, k, rf)[0])
    state = strat.init(jax.random.key(2))
    temp = one.lower(state, jax.random.key(3)).compile().memory_analysis().temp_size_in_bytes

    @jax.jit
    def run(state, key):
        return jax.lax.scan(lambda s, k: (strat.step(s, k, rf)[0], None), state,
                            jax.random.split(key, iters))[0]

    jax.block_until_ready(run(state, jax.random.key(4)))  # compile
    best = float("inf")
    for r in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(run(state, jax.random.key(5 + r)))
        best = min(best, time.perf_counter() - t)
    return {"mode": strat.mode, "steps_per_second": round(iters / best, 1),
            "temp_bytes": int(temp)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gradient_cost.json"))
    a = ap.parse_args(argv)
    res = {m: measure(m, a.iters, a.batch) for m in METHODS if m in available()}
    out = {"task": "AdvantageNAS sec. 5.1 toy supernet, one architecture step (10 edges x 10 convs)",
           "batch": a.batch, "iters": a.iters, "device": jax.devices()[0].platform,
           "jax": jax.__version__, "methods": res}
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
