"""One prepared check of jaxnas on an accelerator (at most 8 minutes on one GPU), one JSON.

    python bench/device_check.py [--expect-gpu] [--out bench/results/device_check.json]
    python bench/device_check.py --smoke --out /tmp/device_check.json     # CPU, tiny sizes, ~2 min

Sections, in this order (the JSON is rewritten after each, so a run cut short keeps what it measured;
past ``--budget-s`` a watchdog writes the JSON, marks it ``incomplete`` and exits with status 3):

- ``device``: platform, device kind, devices, versions. ``--expect-gpu``: exit 2 at once (JSON written)
  when the default backend is not gpu.
- ``tests``: ``pytest -q tests/test_accelerator_branches.py tests/test_supernets.py -k "equal or
  gradient"`` in a subprocess on this device (the forced accelerator-branch equalities and the kernels'
  gradient equalities; ``equal`` rather than ``equals``, which misses test_forced_..._equal_cpu_branches):
  pass / fail counts, failed test ids. Run with ``JAX_DEFAULT_MATMUL_PRECISION=highest`` (``--pytest-precision``):
  the tests compare algorithms at float32 tolerances, which TF32 convolutions would miss on Ampere and later.
  Smoke: one test function (``--pytest-k``).
- ``steps``: NB201 (C 16, 5 cells per stage) and DARTS-8 (C 16, 8 cells), batch 64, each in three
  forms: ``sparse`` (one path: the ``random`` strategy's weight phase, a new uniform architecture every
  step) and ``dense`` (the ``darts`` strategy's weight phase, every op weighted), both the engine's
  compiled search chunk (``Search.run_chunk``'s program, one step per call: the gradient and the
  optimizer update included), and ``discrete``: the retrain training step
  (``jaxnas.training.image_runs.train_image_run``'s own step, taken at ``run_chunks``) of the discrete
  network ``jaxnas.models.specs`` builds for the first sampled architecture, with the search's
  optimizer, no augmentation, no drop-path / cutout / auxiliary head: the physical floor of a one-path
  step. The weight settings are those of ``bench/vs_pytorch.py`` (NB201: AdvantageNAS's Nesterov SGD;
  DARTS: DARTS's SGD, clip 5). Per form: lower and compile seconds, the median step (a new batch each
  step, batches on device beforehand, ``block_until_ready`` per step), ``compiled.memory_analysis()``
  and, on GPU, ``device.memory_stats()`` (``peak_bytes_in_use`` is the process's peak so far: forms run
  in the order listed). DARTS uses ``space.scan_edges`` unless ``--darts-per-edge`` (the per-edge
  programs compile for minutes: the 8-minute budget).
- ``shapley``: the dense NB201 supernet's batched coalition reward (``batched_reward_fn``, N coalition
  masks of the uniform mixing weights in one vmapped program, ``vmap_chunk = N``) against the same N
  by the jitted ``reward_fn`` one at a time; rewards compared.
- ``ma2ml``: M MA2ML pipelines (configs/ma2ml_digits.py's AUG x NB201 cell x HPO space on the embedded
  digits, trained from scratch) in one vmapped program (``lane_mode='vmap'``) against the single-lane
  program called M times.

Smoke (``--smoke``): the same code with tiny sizes (C 4, one cell per stage, DARTS 3 cells, fewer candidate
ops, batch 8, 2 timed steps, 2 coalitions, 2 pipelines of 2 steps, one AutoAugment sub-policy), one pytest
function and XLA:CPU at ``--xla_backend_optimization_level=0`` (compile time; step times are then not
meaningful): what the CPU test runs.
Images are random uint8 (a step's cost does not depend on pixel values); nothing is read from
../shared, so the device machine needs only the repository. A compact table ends the output.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from vs_pytorch import git_head, jaxnas_config, make_images  # noqa: E402  (the same workloads and images)

RESULTS = REPO / "bench" / "results" / "device_check.json"
T0 = time.perf_counter()

# every size the two modes differ in; nothing else differs
SIZES = {
    "full": {"nb201": {"C": 16, "cells_per_stage": 5}, "darts8": {"C": 16, "num_cells": 8}, "batch": 64,
             "images": 1024, "steps": 20, "shapley": {"C": 16, "cells_per_stage": 5, "coalitions": 32, "batch": 64,
                                                       "repeats": 3},
             "ma2ml": {"C": 8, "num_subpolicies": 2, "pipelines": 8, "steps": 100, "batch": 64, "repeats": 2},
             "pytest_k": "equal or gradient", "budget_s": 450},
    # smoke: fewer candidate ops too (XLA:CPU compile time grows with the program's op count)
    "smoke": {"nb201": {"C": 4, "cells_per_stage": 1, "ops": ["none", "skip_connect", "nor_conv_3x3"]},
              "darts8": {"C": 4, "num_cells": 3, "ops": ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"]},
              "batch": 8,
              "images": 64, "steps": 2, "shapley": {"C": 4, "cells_per_stage": 1, "coalitions": 2, "batch": 8,
                                                     "repeats": 2},
              "ma2ml": {"C": 4, "num_subpolicies": 1, "pipelines": 2, "steps": 2, "batch": 8, "repeats": 2},
              "pytest_k": "test_cpu_max_pool_gradient_equals_xla", "budget_s": 540},
}
FORMS = ("discrete", "sparse", "dense")


def log(msg):
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


class Report:
    """The JSON, rewritten whole after every section (and by the watchdog)."""

    def __init__(self, path: Path):
        self.path, self.data, self.lock, self.section = path, {}, threading.Lock(), None

    def write(self):
        with self.lock:
            self.data["elapsed_s"] = round(time.perf_counter() - T0, 1)
            text = json.dumps(self.data, indent=1, default=str)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(text + "\n")
            os.replace(tmp, self.path)

    def run(self, name: str, fn, *args):
        """``self.data[name] = fn(*args)``; an exception is recorded (``error``) and the next section runs."""
        self.section = name
        log(f"{name} ...")
        try:
            out = fn(*args)
        except Exception as e:   # noqa: BLE001 - one section's failure is a result, not the end of the check
            out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
            log(f"{name} failed: {out['error']}")
        with self.lock:
            self.data[name] = out
        self.write()
        return out


def watchdog(report: Report, budget_s: float):
    """Past the budget: the JSON as it stands, marked incomplete, and exit 3 (a compile cannot be
    interrupted from Python; the process can)."""
    def fire():
        with report.lock:
            report.data["incomplete"] = {"budget_s": budget_s, "in_section": report.section}
        try:
            report.write()
            print_table(report.data)
        finally:
            os._exit(3)
    t = threading.Timer(budget_s, fire)
    t.daemon = True
    t.start()
    return t


# ---- helpers -------------------------------------------------------------------------------------
def memory(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
    except Exception:   # noqa: BLE001 - not every backend has it
        return {}
    if m is None:
        return {}
    return {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("temp", "argument", "output", "alias", "generated_code")
            if getattr(m, f"{k}_size_in_bytes", None) is not None}


def device_memory() -> dict:
    """``device.memory_stats()`` of the default device (GPU/TPU; None on CPU)."""
    import jax
    try:
        s = jax.devices()[0].memory_stats()
    except Exception:   # noqa: BLE001
        s = None
    if not s:
        return {}
    return {k: int(s[k]) for k in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit") if k in s}


def lower_compile(jitted, *args):
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return compiled, {"lower_s": round(t1 - t0, 3), "compile_s": round(t2 - t1, 3), "lower_compile_s": round(t2 - t0, 3)}


def timed(fn, *args):
    import jax
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t, out


# ---- sections ------------------------------------------------------------------------------------
def device_info(args) -> dict:
    import jax
    import jaxlib
    d = jax.devices()[0]
    return {"backend": jax.default_backend(), "platform": d.platform, "device_kind": d.device_kind,
            "devices": [str(x) for x in jax.devices()], "device_count": jax.device_count(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
            "matmul_precision": jax.config.jax_default_matmul_precision}


def run_tests(k: str, precision: str) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf",
           "tests/test_accelerator_branches.py", "tests/test_supernets.py", "-k", k]
    # this process already holds the device (jax preallocates 75% of a GPU's memory): the tests take theirs
    # as they go, from what is left
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if precision != "default":
        env["JAX_DEFAULT_MATMUL_PRECISION"] = precision
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    out = r.stdout + r.stderr
    counts = {w: int(n) for n, w in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", out.splitlines()[-1]
                                                 if out.strip() else "")}
    counts["errors"] = counts.pop("error", 0) + counts.pop("errors", 0)
    return {"command": " ".join(["pytest"] + cmd[3:]), "matmul_precision": precision, "returncode": r.returncode,
            "seconds": round(time.perf_counter() - t, 1),
            **{w: counts.get(w, 0) for w in ("passed", "failed", "errors", "skipped", "deselected")},
            "failed_tests": re.findall(r"^FAILED (\S+)", out, re.MULTILINE),
            "output_tail": out[-3000:] if r.returncode else out[-300:]}


def search_config(skeleton: str, form: str, data_path: Path, sz: dict) -> dict:
    """The config of a weight-step workload: bench/vs_pytorch.py's (NB201: AdvantageNAS's Nesterov
    SGD; DARTS-8: DARTS's SGD) at this mode's sizes, ``form``'s strategy (sparse: random, dense:
    darts), no weights-only warm-up phase."""
    workload = "nb201_weights" if skeleton == "nb201" else "darts8_sparse"
    cfg = jaxnas_config(workload, data_path, batch=sz["batch"])
    cfg["strategy"] = {"name": "random" if form == "sparse" else "darts"}
    cfg["search"]["warmup_steps"] = 0
    cfg["space"].update(sz["nb201"] if skeleton == "nb201" else
                        {**sz["darts8"], "scan_edges": not sz["darts_per_edge"]})
    return cfg


def time_search_step(cfg: dict, steps: int) -> dict:
    """The engine's weight-phase chunk (one step per call), a new batch and architecture every step."""
    import jax

    from jaxnas.config.experiment import build
    from jaxnas.config.settings import resolve
    from jaxnas.data import BatchSampler, gather
    cfg = resolve(cfg)
    exp = build(cfg)
    search, d, bs = exp.search, exp.data, cfg["search"]["batch_size"]
    state = search.init(jax.random.key(0))
    tr, va = BatchSampler(len(d.y_train), bs, 0), BatchSampler(len(d.y_val), bs, 1)
    batches = [search.shard_batches((gather((d.x_train, d.y_train), tr.chunk(i, 1)),
                                     gather((d.x_val, d.y_val), va.chunk(i, 1)))) for i in range(steps + 1)]
    chunk, _ = search._chunk_fn("weights")   # the program Search.run_chunk(kind="weights") calls
    compiled, comp = lower_compile(chunk, state, search.inputs, batches[0])
    times, archs = [], set()
    for i, b in enumerate(batches):
        dt, (state, m) = timed(compiled, state, search.inputs, b)
        if i:   # the first call is a warm step
            times.append(dt)
        archs.add(tuple(int(a) for a in jax.device_get(m["sample/arch"])[0, 0]))
    loss = float(jax.device_get(m["weights/train_loss"])[-1])
    return {**comp, "step_ms": 1000 * statistics.median(times), "steps_ms": [round(1000 * t, 3) for t in times],
            "distinct_archs": len(archs), "last_loss": loss, "memory": memory(compiled),
            "device_memory": device_memory(), "exp": exp,
            "config": {"strategy": cfg["strategy"]["name"], "mode": exp.evaluator.mode,
                       # the supernet's effective parameter layout (None in the config: the defaults)
                       "scan_edges": bool(exp.task.net.scan_edges), "scan_cells": bool(exp.task.net.scan_cells),
                       "optimizer": {k: cfg["optimizer"][k] for k in ("name", "lr", "momentum", "nesterov",
                                                                       "weight_decay", "schedule", "clip")}}}


class _Captured(Exception):
    pass


def retrain_step(net, data, settings: dict):
    """The training step, initial state, batch function and compile options ``train_image_run`` builds for
    ``net``, taken where it hands them to the one training loop (``run_chunks``)."""
    from jaxnas.training import image_runs
    got = {}

    def capture(run_dir, state, step, batches, schedule, **kw):
        got.update(state=state, step=step, batches=batches, compiler_options=kw.get("compiler_options"))
        raise _Captured

    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(image_runs, "run_chunks", capture):
        try:
            image_runs.train_image_run(net, data, settings, 0, Path(tmp) / "run")
        except _Captured:
            pass
    if not got:
        raise RuntimeError("train_image_run no longer hands its step to run_chunks")
    return got["step"], got["state"], got["batches"], got["compiler_options"]


def time_discrete_step(skeleton: str, exp, steps: int, sz: dict) -> dict:
    """The retrain step of the discrete network (jaxnas.models.specs) of the space's first sampled
    architecture, the search's optimizer, scanned over one batch per call as run_chunks does."""
    import jax

    from jaxnas.models.specs import build_model, darts_spec, nb201_spec
    from jaxnas.protocols.cells import DEFAULTS
    space, cfg = exp.space, exp.config
    arch = space.sample(jax.random.key(1))
    if skeleton == "nb201":
        spec = nb201_spec(space, arch, C=space.C, cells_per_stage=space.cells_per_stage, num_classes=10)
    else:
        spec = darts_spec(space, arch, C=space.C, num_cells=space.num_cells, num_classes=10, auxiliary=False)
    o = cfg["optimizer"]
    s = copy.deepcopy(DEFAULTS["nb201" if skeleton == "nb201" else "darts"])
    s.update(batch_size=sz["batch"], epochs=1, max_steps=None, augment=False, cutout=0, drop_path=0.0,
             auxiliary_weight=0.0, chunk=1, optimizer=o["name"], lr=o["lr"], momentum=o["momentum"],
             nesterov=o["nesterov"], weight_decay=o["weight_decay"], grad_clip=o["clip"], schedule=o["schedule"])
    step, state, batches, options = retrain_step(build_model(spec), exp.data, s)
    # run_chunks' program
    chunk = jax.jit(lambda state, batch: jax.lax.scan(step, state, batch), compiler_options=options)
    host = [batches(i, 1) for i in range(steps + 1)]
    dev = [jax.device_put(b) for b in host]
    compiled, comp = lower_compile(chunk, state, dev[0])
    times = []
    for i, b in enumerate(dev):
        dt, (state, m) = timed(compiled, state, b)
        if i:
            times.append(dt)
    return {**comp, "step_ms": 1000 * statistics.median(times), "steps_ms": [round(1000 * t, 3) for t in times],
            "arch": space.encode(arch), "network": spec["network"], "last_loss": float(m["loss"][-1]),
            "memory": memory(compiled), "device_memory": device_memory()}


def run_steps(skeleton: str, sz: dict, tmp: Path) -> dict:
    data = make_images(tmp / f"images_{skeleton}.npz", sz["images"])
    out = {"batch": sz["batch"], **(sz["nb201"] if skeleton == "nb201" else sz["darts8"])}
    exp = None
    for form in ("sparse", "dense"):
        log(f"  {skeleton} {form}")
        r = time_search_step(search_config(skeleton, form, data, sz), sz["steps"])
        exp = r.pop("exp") if form == "sparse" else exp
        r.pop("exp", None)
        out[form] = r
    log(f"  {skeleton} discrete")
    out["discrete"] = time_discrete_step(skeleton, exp, sz["steps"], sz)
    for form in ("sparse", "dense"):
        out[f"{form}_over_discrete"] = out[form]["step_ms"] / out["discrete"]["step_ms"]
    out["scan_edges"] = out["sparse"]["config"]["scan_edges"]
    return out


def run_shapley(sz: dict, tmp: Path) -> dict:
    """Batched coalition rewards (Shapley-NAS's V(S) of N coalitions, one vmapped program) against the
    single reward program called N times."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxnas.config.experiment import build
    from jaxnas.config.settings import raw_config, resolve
    sh = sz["shapley"]
    n = sh["coalitions"]
    cfg = raw_config(REPO / "configs" / "shapley_nb201_tiny.py")
    cfg["data"] = {"name": "image_npz", "path": str(make_images(tmp / "images_shapley.npz", sz["images"])),
                   "val_fraction": 0.5, "augment": False}
    cfg["space"].update(C=sh["C"], cells_per_stage=sh["cells_per_stage"])
    cfg["search"].update(batch_size=sh["batch"], val_batch_size=sh["batch"])
    cfg["evaluator"] = {**cfg.get("evaluator", {}), "name": "shared_weights", "vmap_chunk": n}
    cfg["benchmark"] = {"nb201_table": None}
    exp = build(resolve(cfg))
    ev, space, d = exp.evaluator, exp.space, exp.data
    evs, inputs = ev.init(jax.random.key(0)), ev.inputs()
    vb = (jnp.asarray(d.x_val[:sh["batch"]]), jnp.asarray(d.y_val[:sh["batch"]]))
    uniform = np.where(space.mask, 1.0, 0.0) / np.sum(space.mask, -1, keepdims=True)
    keep = np.random.default_rng(0).random((n,) + uniform.shape) < 0.5   # coalitions: random subsets of (edge, op)
    ws = jnp.asarray(uniform[None] * keep, jnp.float32)
    batched, c_b = lower_compile(jax.jit(lambda es, i, b, w: ev.batched_reward_fn(es, i, b, None)(w)[0]),
                                 evs, inputs, vb, ws)
    single, c_s = lower_compile(jax.jit(lambda es, i, b, w: ev.reward_fn(es, i, b, None)(w)[0]),
                                evs, inputs, vb, ws[0])
    t_b, t_s = [], []
    timed(batched, evs, inputs, vb, ws)   # warm
    timed(single, evs, inputs, vb, ws[0])
    for _ in range(sh["repeats"]):        # interleaved
        dt, rb = timed(batched, evs, inputs, vb, ws)
        t_b.append(dt)
        t = time.perf_counter()
        rs = [jax.block_until_ready(single(evs, inputs, vb, ws[i])) for i in range(n)]
        t_s.append(time.perf_counter() - t)
    rb, rs = np.asarray(rb), np.asarray([float(r) for r in rs])
    mb, ms = statistics.median(t_b), statistics.median(t_s)
    return {"space": {"name": "nb201", "C": sh["C"], "cells_per_stage": sh["cells_per_stage"], "mode": ev.mode},
            "coalitions": n, "val_batch": sh["batch"], "repeats": sh["repeats"],
            "vmapped_s": mb, "one_at_a_time_s": ms, "vmapped_s_all": t_b, "one_at_a_time_s_all": t_s,
            "speedup": ms / mb, "rewards_max_abs_diff": float(np.max(np.abs(rb - rs))),
            "compile": {"vmapped": c_b, "single": c_s},
            "memory": {"vmapped": memory(batched), "single": memory(single)}, "device_memory": device_memory()}


def run_ma2ml(sz: dict) -> dict:
    """M MA2ML pipelines trained from scratch in one vmapped program against the single-lane program
    called M times (bench/standalone_batch.py's bench_pipelines, both ways)."""
    import jax
    import numpy as np

    from jaxnas.config import experiment as B
    from jaxnas.config.settings import raw_config, resolve
    from jaxnas.evaluators.standalone import make
    mz = sz["ma2ml"]
    m = mz["pipelines"]
    cfg = resolve(raw_config(REPO / "configs" / "ma2ml_digits.py"),
                  [f"space.C={mz['C']}", f"space.num_subpolicies={mz['num_subpolicies']}"])
    data = B.load_data(cfg)
    space = B.build_space(cfg, data)
    opts = {k: v for k, v in cfg["evaluator"].items() if k != "name"}
    opts.update(max_steps=mz["steps"], batch_size=mz["batch"], lane_mode="vmap")
    ev = make(opts, cfg=cfg, space=space, data=data)
    inputs = ev.inputs()
    archs = space.sample(jax.random.key(m), shape=(m,))
    keys = jax.random.split(jax.random.key(0), m)
    lane = lambda ins, a, k: ev.reward_fn({}, ins, None, k)(space.one_hot(a))[0]
    batched, c_b = lower_compile(jax.jit(jax.vmap(lane, in_axes=(None, 0, 0), axis_name="data")), inputs, archs, keys)
    single, c_s = lower_compile(jax.jit(lane), inputs, archs[0], keys[0])
    timed(batched, inputs, archs, keys)   # warm
    timed(single, inputs, archs[0], keys[0])
    t_b, t_s = [], []
    for _ in range(mz["repeats"]):        # interleaved
        dt, rb = timed(batched, inputs, archs, keys)
        t_b.append(dt)
        t = time.perf_counter()
        rs = [jax.block_until_ready(single(inputs, archs[i], keys[i])) for i in range(m)]
        t_s.append(time.perf_counter() - t)
    rb, rs = np.asarray(rb), np.asarray([float(r) for r in rs])
    mb, ms = statistics.median(t_b), statistics.median(t_s)
    return {"space": {"agents": list(space.agents), "C": mz["C"], "num_subpolicies": mz["num_subpolicies"]},
            "pipelines": m, "steps_per_pipeline": mz["steps"],
            "batch": mz["batch"], "repeats": mz["repeats"], "vmapped_s": mb, "one_at_a_time_s": ms,
            "vmapped_s_all": t_b, "one_at_a_time_s_all": t_s, "speedup": ms / mb,
            "rewards_max_abs_diff": float(np.max(np.abs(rb - rs))),
            "compile": {"vmapped": c_b, "single": c_s},
            "memory": {"vmapped": memory(batched), "single": memory(single)}, "device_memory": device_memory()}


# ---- the table -----------------------------------------------------------------------------------
def _mb(x):
    return f"{x / 2**20:.0f}" if isinstance(x, (int, float)) and x >= 0 else "-"


def print_table(res: dict):
    dev = res.get("device", {})
    lines = [f"device_check: {dev.get('platform')} {dev.get('device_kind')} (smoke {res.get('smoke')}), "
             f"{res.get('elapsed_s', 0):.0f} s" + (f", INCOMPLETE in {res['incomplete']['in_section']}"
                                                   if res.get("incomplete") else "")]
    t = res.get("tests")
    if isinstance(t, dict) and "passed" in t:
        lines.append(f"tests ({t['command'].split(' -k ')[-1]}): {t['passed']} passed, {t['failed']} failed, "
                     f"{t['errors']} errors ({t['seconds']} s)" + (f"; failed: {', '.join(t['failed_tests'])}"
                                                                   if t["failed_tests"] else ""))
    elif t:
        lines.append(f"tests: {t.get('error') or t.get('skipped_reason')}")
    lines.append(f"{'program':<18}{'lower+compile s':>16}{'step ms':>10}{'x discrete':>11}{'temp MB':>9}{'peak MB':>9}")
    for sk in ("nb201", "darts8"):
        r = res.get("steps", {}).get(sk)
        if not isinstance(r, dict) or "error" in r:
            lines.append(f"{sk:<18}{(r or {}).get('error', 'not run')}")
            continue
        for form in FORMS:
            f = r[form]
            ratio = f"{f['step_ms'] / r['discrete']['step_ms']:.2f}"
            lines.append(f"{sk + ' ' + form:<18}{f['lower_compile_s']:>16.1f}{f['step_ms']:>10.1f}{ratio:>11}"
                         f"{_mb(f['memory'].get('temp')):>9}{_mb(f['device_memory'].get('peak_bytes_in_use')):>9}")
    for name, what in (("shapley", "coalitions"), ("ma2ml", "pipelines")):
        r = res.get(name)
        if not isinstance(r, dict) or "error" in r:
            lines.append(f"{name:<18}{(r or {}).get('error', 'not run')}")
            continue
        lines.append(f"{name:<18}{r[what]} {what}: vmapped {r['vmapped_s']:.3f} s, one at a time "
                     f"{r['one_at_a_time_s']:.3f} s, speedup {r['speedup']:.2f}x, compile "
                     f"{r['compile']['vmapped']['lower_compile_s']:.1f} + {r['compile']['single']['lower_compile_s']:.1f} s")
    print("\n".join(lines), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one pytest function (CPU CI)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--expect-gpu", action="store_true", help="fail (exit 2) unless the default backend is gpu")
    ap.add_argument("--budget-s", type=float, default=None, help="watchdog: write what was measured and exit 3 "
                    "(default 450 s; smoke 540 s)")
    ap.add_argument("--pytest-k", default=None, help="the pytest -k expression (default: 'equal or gradient'; "
                    "smoke: one test function); 'none' skips the tests")
    ap.add_argument("--pytest-precision", default="highest", choices=["highest", "high", "default"],
                    help="JAX_DEFAULT_MATMUL_PRECISION of the pytest run")
    ap.add_argument("--darts-per-edge", action="store_true", help="DARTS-8 per edge, not space.scan_edges")
    ap.add_argument("--sections", default="tests,nb201,shapley,ma2ml,darts8",
                    help="comma-separated subset, in this order")
    args = ap.parse_args()
    mode = "smoke" if args.smoke else "full"
    if args.smoke and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        # XLA:CPU compiles in a third of the time without LLVM's optimisations: a compiler flag (no code path
        # changes), set before jax is imported (every jax import here is inside a function)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    sz = {**copy.deepcopy(SIZES[mode]), "darts_per_edge": args.darts_per_edge}
    budget = args.budget_s or sz["budget_s"]
    report = Report(Path(args.out))
    report.data = {"smoke": args.smoke, "command": " ".join(["python", "bench/device_check.py", *sys.argv[1:]]),
                   "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "git": git_head(),
                   "load_average_start": [round(v, 2) for v in os.getloadavg()], "budget_s": budget,
                   "sizes": {k: v for k, v in sz.items() if k not in ("budget_s",)},
                   "xla_flags": os.environ.get("XLA_FLAGS", "")}
    watchdog(report, budget)
    info = report.run("device", device_info, args)
    if args.expect_gpu and info.get("backend") != "gpu":
        report.data["error"] = f"--expect-gpu: the default backend is {info.get('backend')!r}, not 'gpu'"
        report.write()
        print(report.data["error"], file=sys.stderr)
        sys.exit(2)
    sections = args.sections.split(",")
    k = args.pytest_k or sz["pytest_k"]
    if "tests" in sections:
        if k.lower() == "none":
            report.data["tests"] = {"skipped_reason": "--pytest-k none"}
        else:
            report.run("tests", run_tests, k, args.pytest_precision)
    report.data["steps"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sections:
            if name in ("nb201", "darts8"):
                report.section = f"steps/{name}"
                log(f"steps/{name} ...")
                try:
                    r = run_steps(name, sz, Path(tmp))
                except Exception as e:   # noqa: BLE001
                    r = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
                    log(f"steps/{name} failed: {r['error']}")
                report.data["steps"][name] = r
                report.write()
            elif name == "shapley":
                report.run("shapley", run_shapley, sz, Path(tmp))
            elif name == "ma2ml":
                report.run("ma2ml", run_ma2ml, sz)
    report.data["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    errors = [n for n in ("device", "tests", "shapley", "ma2ml") if isinstance(report.data.get(n), dict)
              and "error" in report.data[n]] + [f"steps/{n}" for n, r in report.data["steps"].items() if "error" in r]
    report.data["section_errors"] = errors
    report.write()
    print_table(report.data)
    print(f"wrote {args.out}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
