"""``jaxnas search CONFIG [key=value ...] [--workdir DIR]``, ``jaxnas report WORKDIR``,
``jaxnas retrain WORKDIR [key=value ...]`` and ``jaxnas export WORKDIR [--out DIR]``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _search(args):
    from jaxnas.config.settings import load_config
    from jaxnas.runner import run_search
    cfg = load_config(args.config, args.overrides)
    workdir = Path(args.workdir or Path("workdirs") / Path(args.config).stem)
    result = run_search(cfg, workdir, progress=None if args.quiet else sys.stderr,
                        force_restart=args.force_restart, compile_cache=not args.no_compile_cache)
    from jaxnas.engine.distributed import is_primary
    if not is_primary():   # several processes (search.distributed): process 0 reports
        return
    print(f"derived architecture: {result['arch']}")
    if "genotype" in result:
        print(f"genotype: {result['genotype']}")
    if "val_accuracy" in result:
        line = f"validation accuracy: {result['val_accuracy']:.4f} (loss {result['val_loss']:.4f})"
        if "val_majority_rate" in result:
            line += f"; majority-class rate {result['val_majority_rate']:.4f}"
        print(line)
    for c in result.get("table_report", ()):
        print(f"{c}: {result[c]:.2f} (rank {result[c + '_rank']}, best {result[c + '_best']:.2f})")
    if "param_count" in result:
        print(f"parameters: {int(result['param_count'])}")
    from jaxnas.report import policy_lines
    for line in policy_lines(result.get("policy")):   # TabNAS: how the policy backs the choice
        print(line)
    print(f"reward evaluations: {result['evaluations']} ({result['search_seconds']:.1f} s)")
    print(f"work dir: {workdir}")
    print(json.dumps(result))


def _list(args):
    from jaxnas.catalog import details, overview
    print(overview() if args.kind is None else details(args.kind, args.name or ""))


def _report(args):
    from jaxnas.report import report
    metrics = [m for m in (args.metrics or "").split(",") if m]
    print(report(args.workdir, plots=not args.no_plots, metrics=metrics))


# what a retrain reports, in this order, where the protocol has it (classifiers: accuracy; LMs: perplexity)
_RETRAIN_METRICS = (("val_loss", ".4f"), ("val_accuracy", ".4f"), ("val_balanced_error", ".4f"),
                    ("val_perplexity", ".2f"), ("test_accuracy", ".4f"), ("test_perplexity", ".2f"))


def _metrics_line(m: dict, only=None) -> str:
    shown = [(k, f) for k, f in _RETRAIN_METRICS if k in m and (only is None or k in only)]
    return ", ".join(f"{k.replace('_', ' ')} {m[k]:{f}}" for k, f in shown)


def _retrain(args):
    from jaxnas.retrain import parse_settings, retrain
    seeds = None
    if args.seeds is not None:
        seeds = [int(x) for x in args.seeds.split(",")] if "," in args.seeds else int(args.seeds)
    out = retrain(args.workdir, parse_settings(args.overrides), top=args.top, seeds=seeds, config=args.config,
                  force=args.force_restart, progress=None if args.quiet else sys.stderr)
    for i, c in enumerate(out["candidates"]):
        print(f"candidate {i}: {c['arch']} ({c['param_count']:,} parameters) over {len(c['runs'])} seed(s): "
              f"{_metrics_line(c['mean'])}")
    b = out["best"]
    print(f"best on validation: {b['arch']} (candidate {b['candidate']}, seed {b['seed']}, {_metrics_line(b, ('val_accuracy', 'val_perplexity'))})")
    print(f"written: {Path(args.workdir) / 'retrain.json'}")


def _export(args):
    from jaxnas.export import export
    out = export(args.workdir, args.out, progress=None if args.quiet else sys.stderr)
    print(f"exported to {out}: model, variables = jaxnas.export.load({str(out)!r})")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="jaxnas", description="Weight-sharing NAS in JAX/Flax")
    sub = ap.add_subparsers(dest="command", required=True)
    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument("--no-compile-cache", action="store_true",
                       help="do not use the persistent compilation cache (default: on, in "
                            "$JAXNAS_COMPILE_CACHE or ~/.cache/jaxnas/xla; see jaxnas/engine/compile_cache.py)")
    cache.add_argument("--no-retain-host-memory", action="store_true",
                       help="CPU: let glibc unmap a compiled call's temporary block after each call (default: kept in "
                            "the process, synchronous CPU dispatch, so a call does not fault it in again: NB201 steps "
                            "0.78, DARTS-8 0.85 of the time at one step per call; docs/cpu-performance.md)")
    s = sub.add_parser("search", parents=[cache], help="run (or resume) a search from a config file")
    s.add_argument("config", help="Python file with get_config(), e.g. configs/quickstart.py, or the name of a "
                                     "shipped config (quickstart; jaxnas list shows them)")
    s.add_argument("overrides", nargs="*", help="dotted.key=value overrides (Python literals)")
    s.add_argument("--workdir", help="where checkpoints, metrics and the result go "
                                     "(default workdirs/<config name>); resumes if it has a checkpoint")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--force-restart", action="store_true",
                   help="delete the work dir's checkpoints, metrics and result (a previous run, perhaps "
                        "with another config) and start over")
    s.set_defaults(fn=_search)
    r = sub.add_parser("report", help="summarise a work dir and save plots")
    r.add_argument("workdir")
    r.add_argument("--no-plots", action="store_true")
    r.add_argument("--metrics", help="comma-separated metrics to plot into metrics.png, e.g. pv,feasible "
                                     "(a bare name matches strategy/pv; see metrics.jsonl for all)")
    r.set_defaults(fn=_report)
    t = sub.add_parser("retrain", parents=[cache], help="train the architecture(s) a finished search found from scratch "
                                       "(writes WORKDIR/retrain.json)")
    t.add_argument("workdir", help="a finished search work dir")
    t.add_argument("overrides", nargs="*", help="key=value retrain settings (epochs=5 lr=0.05 "
                                                "data.max_train=1000; see jaxnas/retrain.py)")
    t.add_argument("--top", type=int, help="candidates to retrain (TabNAS Alg. 3; default 3 for MLP "
                                           "spaces, 1 for cells)")
    t.add_argument("--seeds", help="number of seeds, or a comma-separated list of seeds")
    t.add_argument("--config", help="Python file whose get_config() returns retrain settings, e.g. "
                                    "configs/retrain_darts.py")
    t.add_argument("--force-restart", action="store_true",
                   help="delete a previous retrain of this work dir with other settings and start over")
    t.add_argument("--quiet", action="store_true", help="no progress lines")
    t.set_defaults(fn=_retrain)
    li = sub.add_parser("list", help="what is registered (spaces, strategies, evaluators, data sets) and every "
                                     "option with its type, range and default")
    li.add_argument("kind", nargs="?", choices=("space", "strategy", "evaluator", "data"))
    li.add_argument("name", nargs="?")
    li.set_defaults(fn=_list)
    e = sub.add_parser("export", parents=[cache], help="write the found network (architecture, constructor arguments, "
                                      "retrained variables) for use with jaxnas.export.load")
    e.add_argument("workdir")
    e.add_argument("--out", help="output directory (default WORKDIR/export)")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(fn=_export)
    args, extra = ap.parse_known_args(argv)  # overrides may come after the options too
    bad = [e for e in extra if "=" not in e or args.command not in ("search", "retrain")]
    if bad:
        ap.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    # only as the process's entry point (the jaxnas command): cli.main([...]) from Python leaves the
    # calling process as it is (host_memory.retain_in_process() is the Python form)
    if argv is None and hasattr(args, "no_retain_host_memory") and not args.no_retain_host_memory:
        from jaxnas.core import host_memory
        if host_memory.supported():
            try:
                host_memory.retain_in_process()   # before any computation: the CPU client is not created yet
            except RuntimeError:   # a program that computed before calling cli.main(): glibc's default stays
                pass
    if not getattr(args, "no_compile_cache", True):
        from jaxnas.engine.compile_cache import ensure
        ensure()   # a resume or a second run loads its compiled programs instead of compiling again
    from jaxnas.core.signals import StopRequested
    try:
        args.fn(args)
    except StopRequested as e:           # SIGTERM / SIGINT: a checkpoint of the stop step is on disk
        print(f"jaxnas: {e}", file=sys.stderr)
        return e.exit_code
    except (ValueError, OSError) as e:   # OSError: unwritable work dir, missing files, ...
        print(f"jaxnas: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
