"""Tiny recurrent cell searches on a slice of PTB, every SP-NAS strategy of AdvantageNAS Table 3 (and
DARTS, random), found cells retrained briefly, validation / test perplexity next to Table 3; and the
cost of one sparse search step against the discrete cell's training step (App. E sizes).

    python bench/ptb_tiny.py [--quick] [--seeds 3] [--steps 300] [--retrain-epochs 2]
                             [--strategies advantage,reinforce,...] [--cost-only | --no-cost]

Protocol (written into ``bench/results/ptb_tiny.json``):
- Data: the first ``--train-tokens`` training tokens of PTB and the first ``--val-tokens`` validation
  and test tokens (the 10k-word vocabulary of the full training split).
- Model: App. E's skeleton and cell (3 nodes, 6 edges, {none, tanh, relu, sigmoid, identity}) with
  ``--units`` embedding / hidden units, BPTT ``--bptt``, ``--batch`` streams, dropout 0.5.
- Search: ``--steps`` steps, each one weight step (SGD lr 20 cosine, clip 0.25) and one theta step
  on the next training window (App. E: theta's reward on training data); theta: Adam (0.9, 0.999)
  cosine, clip 1, lr ``--lr`` (App. E's 3e-3 scaled up for the short budget). Final rule as sec. 5.3:
  argmax for AdvantageNAS, PARSEC, ProxylessNAS (and DARTS), process best for REINFORCE and GDAS.
  A seed changes the initialisation and every sample; the data slice is fixed.
- Retrain: each found cell from scratch (a new initialisation per seed), ``--retrain-epochs`` epochs
  over the same training slice with the search's weight optimiser (App. E: "the same"), dropout 0.5;
  then perplexity over the validation and test slices, hidden state carried (DARTS evaluate, 10
  streams). The retrained model is the supernet run sparse at the cell's one-hot weights (the same
  function as the discrete model, tested in tests/test_rnn.py; unused 'none'-edge W^h get no
  gradient), so one compiled program trains every cell.
- Cost: ``memory_analysis().temp_size_in_bytes`` of one compiled search step (sparse: AdvantageNAS;
  dense: DARTS) and of the discrete cell's training step, at App. E sizes (300 units, batch 256,
  BPTT 35, 10k words); wall time per step at a CPU-sized setting (same model, batch ``--batch``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxnas.config.experiment import build  # noqa: E402
from jaxnas.config.settings import load_config  # noqa: E402
from jaxnas.core import optim  # noqa: E402
from jaxnas.data.text import batchify, window_count  # noqa: E402
from jaxnas.models.supernets.rnn import RNNLanguageModel, init_rnn_params  # noqa: E402
from jaxnas.tasks.language_model import stream_loss  # noqa: E402
from jaxnas.training.language_model import lm_train_step  # noqa: E402

RESULTS = REPO / "bench" / "results"
CONFIG = REPO / "configs" / "advantagenas_ptb.py"
# AdvantageNAS Table 3: validation / test perplexity, mean and std over 5 searches (App. E protocol)
TABLE3 = {"advantage": {"val": (94.90, 0.18), "test": (91.18, 0.13)},
          "proxyless": {"val": (95.12, 0.22), "test": (90.76, 0.23)},
          "gdas": {"val": (99.28, 2.00), "test": (95.40, 2.01)},
          "reinforce": {"val": (99.48, 1.51), "test": (95.50, 1.73)},
          "parsec": {"val": (99.68, 1.49), "test": (95.51, 1.01)}}
FINAL = {"advantage": "argmax", "parsec": "argmax", "proxyless": "argmax", "darts": "argmax",
         "reinforce": "process_best", "gdas": "process_best"}
DEFAULT = ("advantage", "reinforce", "parsec", "proxyless", "gdas", "darts", "random")


def overrides(args, name: str, steps: int) -> list[str]:
    strat = {"name": name}
    if name != "random":
        strat.update(optimizer="adam", lr=args.lr, b1=0.9, b2=0.999, clip=1.0, lr_schedule="cosine",
                     final=FINAL[name])
        if name == "advantage":
            strat.update(zero_op="none", decay=0.95)
    return [f"strategy={strat!r}", f"space.emb_size={args.units}", f"space.hidden_size={args.units}",
            f"space.bptt={args.bptt}", f"search.batch_size={args.batch}", f"search.steps={steps}",
            f"search.chunk={min(steps, 100)}", f"search.checkpoint_every={min(steps, 100)}",
            f"data.max_train={args.train_tokens}",
            f"data.max_val={args.val_tokens}"]


def retrain_fn(net, opt, W: int, L: int, B: int):
    """One epoch (``lax.scan`` over the windows, hidden carried from zeros) of the one-hot supernet."""
    H = net.space.hidden_size
    train_step = lm_train_step(net, opt, mode="sparse")   # the retrain's weight step (App. E)

    def step(carry, xs):
        params, opt_state, h = carry
        x, y, k, w = xs[0], xs[1], xs[2], xs[3]
        params, opt_state, h, loss = train_step(params, opt_state, h, x, y, k, w)
        return (params, opt_state, h), loss

    @jax.jit
    def epoch(params, opt_state, weights, src, key):
        xs = src[: W * L].reshape(W, L, B)
        ys = src[1: W * L + 1].reshape(W, L, B)
        keys = jax.random.split(key, W)
        ws = jnp.broadcast_to(weights, (W,) + weights.shape)
        (params, opt_state, _), losses = jax.lax.scan(step, (params, opt_state, jnp.zeros((B, H))),
                                                      (xs, ys, keys, ws))
        return params, opt_state, jnp.mean(losses)
    return epoch


def retrain(space, arch, data, args, seed: int, cache: dict) -> dict:
    net = RNNLanguageModel(space, dropout=0.5)
    B, L = args.batch, args.bptt
    src = jnp.asarray(batchify(data.x_train, B))
    W = window_count(src.shape[0], L)
    total = args.retrain_epochs * W
    if "epoch" not in cache:
        cache["opt"] = optim.make_optimizer("sgd", 20.0, clip=0.25, schedule="cosine", total_steps=total)
        cache["epoch"] = retrain_fn(net, cache["opt"], W, L, B)
    key = jax.random.key(1000 + seed)
    params = init_rnn_params(net, key)
    opt_state = cache["opt"].init(params)
    w = space.one_hot(jnp.asarray(arch))
    t0 = time.perf_counter()
    for e in range(args.retrain_epochs):
        params, opt_state, loss = cache["epoch"](params, opt_state, w, src, jax.random.fold_in(key, e))
    val = stream_loss(net, params, data.x_val, 10, L, w)
    test = stream_loss(net, params, data.x_test, 10, L, w)
    return {"train_loss": float(loss), "val_perplexity": val["perplexity"], "test_perplexity": test["perplexity"],
            "retrain_seconds": round(time.perf_counter() - t0, 1)}


def run_strategy(name: str, args) -> dict:
    exp = build(load_config(CONFIG, overrides(args, name, args.steps)))
    search, space, data = exp.search, exp.space, exp.data
    derive = jax.jit(exp.strategy.derive)
    runs, cache = [], {}
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        state = search.init(jax.random.key(seed))
        done = 0
        while done < args.steps:
            n = min(100, args.steps - done)
            state, m = search.run_chunk(state, kind="both", length=n)
            done += n
        arch = np.asarray(jax.device_get(derive(state.strategy)))
        secs = time.perf_counter() - t0
        sup = exp.evaluator.result(jax.device_get(state.evaluator), arch)
        rt = retrain(space, arch, data, args, seed, cache)
        runs.append({"seed": seed, "cell": space.encode(arch), "param_count": int(space.param_count(arch)),
                     "search_seconds": round(secs, 1), "supernet_val_perplexity": sup["val_perplexity"],
                     "final_train_loss": float(np.asarray(m["weights/train_loss"])[-1]), **rt})
        print(f"  {name} seed {seed}: {runs[-1]['cell']} val {rt['val_perplexity']:.1f} test "
              f"{rt['test_perplexity']:.1f} ({secs:.0f} s search, {rt['retrain_seconds']:.0f} s retrain)", flush=True)
    stat = lambda k: [round(float(np.mean([r[k] for r in runs])), 2), round(float(np.std([r[k] for r in runs])), 2)]
    return {"final": FINAL.get(name, "argmax"), "runs": runs, "val_perplexity": stat("val_perplexity"),
            "test_perplexity": stat("test_perplexity"), "supernet_val_perplexity": stat("supernet_val_perplexity"),
            "table3": TABLE3.get(name)}


def _kendall(a, b) -> float:
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return float(s / (n * (n - 1) / 2))


def agreement(rows: dict) -> dict:
    names = [n for n in TABLE3 if n in rows]
    out = {"methods": names}
    for split in ("val", "test"):
        ours = [rows[n][f"{split}_perplexity"][0] for n in names]
        paper = [TABLE3[n][split][0] for n in names]
        out[f"{split}_order_ours"] = [names[i] for i in np.argsort(ours)]
        out[f"{split}_order_table3"] = [names[i] for i in np.argsort(paper)]
        out[f"{split}_kendall_tau"] = round(_kendall(ours, paper), 3) if len(names) > 1 else None
        out[f"{split}_advantage_beats_reinforce"] = (
            bool(rows["advantage"][f"{split}_perplexity"][0] < rows["reinforce"][f"{split}_perplexity"][0])
            if {"advantage", "reinforce"} <= set(rows) else None)
    return out


def cost(args) -> dict:
    """Temp memory of one compiled step at App. E sizes; time per step at the CPU-sized setting."""
    out = {}
    for label, units, batch, bptt, timed in (("app_e", 300, 256, 35, False),
                                             ("cpu", args.units, args.batch, args.bptt, True)):
        row = {"units": units, "batch": batch, "bptt": bptt}
        for name in ("advantage", "darts"):
            ov = [f"strategy={{'name': {name!r}}}", f"space.emb_size={units}", f"space.hidden_size={units}",
                  f"space.bptt={bptt}", f"search.batch_size={batch}", "search.steps=10", "search.chunk=1",
                  f"data.max_train={max(args.train_tokens, batch * (bptt + 2))}", f"data.max_val={args.val_tokens}"]
            exp = build(load_config(CONFIG, ov))
            st = exp.search.init(jax.random.key(0))
            fn = exp.search._chunk_fn("both")[1]
            comp = fn.lower(st, exp.search.inputs, 1).compile()
            key = "sparse_search_step" if name == "advantage" else "dense_search_step"
            row[key + "_temp_bytes"] = int(comp.memory_analysis().temp_size_in_bytes)
            if timed:
                st, _ = comp(st, exp.search.inputs)
                jax.block_until_ready(st)
                t0 = time.perf_counter()
                for _ in range(args.time_steps):
                    st, _ = comp(st, exp.search.inputs)
                jax.block_until_ready(st)
                row[key + "_ms"] = round(1000 * (time.perf_counter() - t0) / args.time_steps, 1)
        sp = exp.space
        arch = (1, 2, 3, 4, 1, 2)
        net = RNNLanguageModel(sp, arch=arch, dropout=0.5)
        params = init_rnn_params(net, jax.random.key(0))
        opt = optim.make_optimizer("sgd", 20.0, clip=0.25)
        ost = opt.init(params)
        x = jnp.zeros((bptt, batch), jnp.int32)
        h = jnp.zeros((batch, units))
        comp = jax.jit(lm_train_step(net, opt)).lower(params, ost, h, x, x, jax.random.key(0)).compile()
        row["discrete_weight_step_temp_bytes"] = int(comp.memory_analysis().temp_size_in_bytes)
        if timed:
            out_ = comp(params, ost, h, x, x, jax.random.key(0))
            jax.block_until_ready(out_)
            t0 = time.perf_counter()
            for i in range(args.time_steps):
                out_ = comp(out_[0], out_[1], out_[2], x, x, jax.random.key(i))
            jax.block_until_ready(out_)
            row["discrete_weight_step_ms"] = round(1000 * (time.perf_counter() - t0) / args.time_steps, 1)
        row["sparse_over_discrete_temp"] = round(row["sparse_search_step_temp_bytes"]
                                                 / row["discrete_weight_step_temp_bytes"], 2)
        row["dense_over_discrete_temp"] = round(row["dense_search_step_temp_bytes"]
                                                / row["discrete_weight_step_temp_bytes"], 2)
        out[label] = row
        print(f"cost {label}: {row}", flush=True)
    out["note"] = ("a search step = one weight step + one theta step (sparse: AdvantageNAS, dense: DARTS "
                   "1st order); the discrete step is one weight step of the derived model, so about half "
                   "the work of a search step is expected")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--strategies", default=",".join(DEFAULT))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--retrain-epochs", type=int, default=2)
    p.add_argument("--units", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--bptt", type=int, default=10)
    p.add_argument("--train-tokens", type=int, default=40_000)
    p.add_argument("--val-tokens", type=int, default=10_000)
    p.add_argument("--lr", type=float, default=3e-2, help="theta Adam lr (App. E's 3e-3, scaled)")
    p.add_argument("--time-steps", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 20 steps, 1 retrain epoch")
    p.add_argument("--cost-only", action="store_true")
    p.add_argument("--no-cost", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.retrain_epochs, args.time_steps = 1, 20, 1, 3
    out_path = RESULTS / ("ptb_tiny_quick.json" if args.quick else "ptb_tiny.json")
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    protocol = {k: getattr(args, k) for k in ("seeds", "steps", "retrain_epochs", "units", "batch", "bptt",
                                              "train_tokens", "val_tokens", "lr")}
    protocol["machine"] = (f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), jax {jax.__version__} "
                           f"{jax.default_backend()}")
    if not args.cost_only:
        if results.get("protocol", {}).get("steps") not in (None, args.steps):
            results = {k: v for k, v in results.items() if k == "cost"}
        results["protocol"] = protocol
        results.setdefault("strategies", {})
        t_all = time.perf_counter()
        for name in [n for n in args.strategies.split(",") if n]:
            print(f"{name}:", flush=True)
            results["strategies"][name] = run_strategy(name, args)
            results["agreement_with_table3"] = agreement(results["strategies"])
            _write(out_path, results)
        results["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    if not args.no_cost:
        results["cost"] = cost(args)
    _write(out_path, results)
    rows = results.get("strategies", {})
    print(f"{'strategy':10s} {'val ppl':>16s} {'test ppl':>16s}   Table 3 val / test")
    for n, r in sorted(rows.items(), key=lambda kv: kv[1]["val_perplexity"][0]):
        t3 = TABLE3.get(n)
        t3s = f"{t3['val'][0]:.2f} / {t3['test'][0]:.2f}" if t3 else "-"
        print(f"{n:10s} {r['val_perplexity'][0]:8.1f} ± {r['val_perplexity'][1]:5.1f} "
              f"{r['test_perplexity'][0]:8.1f} ± {r['test_perplexity'][1]:5.1f}   {t3s}")
    if "agreement_with_table3" in results:
        print(json.dumps(results["agreement_with_table3"]))


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
