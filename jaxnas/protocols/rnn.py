"""The ``rnn`` retrain protocol (AdvantageNAS sec. 5.3 / App. E): the discrete language model of the
derived recurrent cell trained from scratch "with the same optimisation" as the search: SGD lr 20
cosine-annealed to 0, clipping 0.25, batch 256, BPTT 35, dropout 0.5, 100 epochs
(``jaxnas.training.language_model``); validation and test perplexity (Table 3's columns). Settings
default to the search config's (batch size, BPTT, dropout, optimizer) and take overrides."""
from __future__ import annotations

from pathlib import Path

from jaxnas.core.workdir import progress_line
from jaxnas.data.inputs import input_info
from jaxnas.models.specs import build_model, rnn_spec
from jaxnas.protocols.base import RETRAIN_DIR, RunContext, choose_best, mean_metrics, register, searched_arch, seed_list
from jaxnas.training.language_model import train_lm_run


def default_settings(cfg: dict) -> dict:
    s, o = cfg["space"], cfg["optimizer"]
    return {"seeds": 1, "top": 1, "epochs": 100, "batch_size": int(cfg["search"]["batch_size"]),
            "bptt": int(s["bptt"]), "dropout": float(s["dropout"]), "lr": float(o["lr"]),
            "momentum": float(o["momentum"]) if o["name"] == "sgd" else 0.0,
            "weight_decay": float(o["weight_decay"]), "grad_clip": o["clip"], "schedule": o["schedule"],
            "eval_batch": int(s["eval_streams"]), "max_steps": None, "log_every": 50,
            "checkpoint_every": 1000, "chunk": 1}   # chunk: steps per compiled call (50 no faster on CPU)


def spec(cfg: dict, space, arch, data, s: dict) -> dict:
    return rnn_spec(space, arch, dropout=float(s["dropout"]))


def run(ctx: RunContext):
    rdir, cfg, result, s, progress = ctx.rdir, ctx.cfg, ctx.result, ctx.settings, ctx.progress
    data, space, arch = searched_arch(cfg, result)
    net_spec = spec(cfg, space, arch, data, s)
    net = build_model(net_spec)
    runs = []
    for seed in seed_list(s):
        label = f"c0_s{seed}"
        run = train_lm_run(net, data, s, seed, Path(rdir) / label, progress, ctx.stop_after,
                           final_as=f"{RETRAIN_DIR}/{label}/final", stop=ctx.stop)
        if run is None:
            return None
        runs.append(run)
    cand = {"arch": space.encode(arch), "arch_indices": arch.tolist(),
            "param_count": int(space.param_count(arch)), "runs": runs, "mean": mean_metrics(runs), "model": net_spec}
    best = choose_best([cand])
    progress_line(progress, f"retrained {cand['arch']}: val perplexity {best['val_perplexity']:.2f}, test perplexity "
                   f"{best['test_perplexity']:.2f}, {cand['param_count']:,} parameters")
    return {"protocol": "rnn", "seeds": seed_list(s), "candidates": [cand], "best": best,
            "input": input_info(data)}


register("rnn", default_settings=default_settings, spec=spec, run=run)
