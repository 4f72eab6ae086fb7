"""Experiment configs: a Python file whose ``get_config()`` returns a nested dict.

Every key must exist in ``SCHEMA``, except in the *tagged* sections ``space``, ``evaluator`` and
``strategy``, whose keys depend on their ``name``: a space's and an evaluator's keys are checked
against their registered schema here, a strategy's options against the strategy's (its types and
ranges here, what depends on the space when it is built); naming another one drops the previous
one's keys. Command-line overrides are ``dotted.key=value`` with Python literals
(``search.steps=200 strategy.lr=0.01 space.widths=[8,16]``).

Every value has a type and a range (``jaxnas.core.schema``): :func:`resolve` checks them all before
anything is loaded, built or compiled, and raises ONE ValueError listing every bad key (its dotted
name, what it must be, the value given).
"""
from __future__ import annotations

import ast
import copy
import importlib.util
import traceback
from pathlib import Path

from jaxnas.config.experiment import SPACES
from jaxnas.core import schema as S
from jaxnas.evaluators import get as get_evaluator
from jaxnas.strategies.base import check_options

# Kept literal so that importing jaxnas.config.settings stays light (no jax); tests/test_config.py checks
# that they equal jaxnas.engine.search.PHASE_KINDS, jaxnas.core.optim.NAMES / SCHEDULES and jaxnas.tasks.classification.REWARDS.
PHASE_KINDS = ("weights", "strategy", "both")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")
TASK_REWARDS = ("neg_loss", "accuracy")
_UNIT = dict(ge=0, lt=1)

# The keys of a config, each with its type, range and default.
SCHEMA: dict = {
    "seed": S.Int(0, ge=0),   # the search seed: weights, policy, samples, batch order (and the split by default)
    "data": {
        "name": S.Str("connect4"),   # connect4 (embedded) | tabular | image_npz | cifar10 | cifar100 | any tfds name
        "path": S.Optional(S.Path()),       # tabular / image_npz file
        "val_path": S.Optional(S.Path()),   # tabular / image_npz: own validation file, format of data.path
                                            # (then data.val_fraction is not used)
        "test_path": S.Optional(S.Path()),  # tabular / image_npz: own test file -> data.x_test / y_test
        "data_dir": S.Optional(S.Path()),   # tfds data_dir prepared in array_record format
        "train_split": S.Str("train"),      # tfds: weights train on this split ...
        "val_split": S.Str("test"),         # ... the strategy's reward (e.g. DARTS-style "train[50%:]")
        "test_split": S.Optional(S.Str()),  # tfds: a test split -> data.x_test / y_test (retrain reports it)
        "label": S.Optional(S.Str() | S.Int()),  # tabular: label column (CSV), name or index — default last
        # tabular CSV: columns of strings, ordinal-encoded; any other column must be numeric in every row
        "categorical": S.List(S.Str(), default=[]),
        "val_fraction": S.Float(0.2, gt=0, lt=1),   # share of data.path split off for validation
        "split_seed": S.Optional(S.Int(ge=0)),  # seed of that split (and of max_train); None: seed
        "max_train": S.Optional(S.Int(ge=1)),
        "max_val": S.Optional(S.Int(ge=1)),
        "standardize": S.Bool(True),
        "augment": S.Bool(False),           # images: random crop (pad 4) + horizontal flip
    },
    # tagged sections: the keys of each depend on its name (schema from the registry of spaces /
    # evaluators, options of the strategy); naming another one drops the old one's keys
    "space": {"name": S.Str("mlp")},                  # mlp | nb201 | darts (jaxnas.config.experiment.SPACES)
    "evaluator": {"name": S.Str("shared_weights")},   # shared_weights | table | standalone
    "strategy": {"name": S.Str("reinforce")},
    "optimizer": {
        "name": S.Choice(*OPTIMIZERS, default="adam"),
        "lr": S.Float(1e-3, gt=0),
        "b1": S.Float(0.9, **_UNIT),
        "b2": S.Float(0.999, **_UNIT),
        "eps": S.Float(1e-8, gt=0),          # Adam epsilon (TabNAS uses 1e-3)
        "momentum": S.Float(0.9, **_UNIT),
        "nesterov": S.Bool(False),
        "weight_decay": S.Float(0.0, ge=0),
        "clip": S.Optional(S.Float(gt=0)),
        "schedule": S.Choice(*SCHEDULES, default="constant"),
    },
    "benchmark": {
        "nb201_table": S.Optional(S.Path()),  # CSV(.gz) of NAS-Bench-201 accuracies: the result gets the derived cell's
    },
    "search": {
        "steps": S.Int(1000, ge=1, le=2**31 - 1),   # an int32 step counter
        "warmup_steps": S.Int(0, ge=0),      # weights only (the strategy does not move)
        # WORKDIR[:STEP]: start from that search's supernet and weight optimizer at STEP (newest when
        # omitted) with a fresh strategy: one warm-up shared by several strategies (jaxnas/engine/fork.py)
        "init_from": S.Optional(S.Path()),
        # SIGTERM / SIGINT stop at the next chunk boundary with a checkpoint (jaxnas/core/signals.py)
        "handle_signals": S.Bool(True),
        # stop when the weight loss exceeds this many times its first chunk's mean (None: off)
        "divergence_factor": S.Optional(S.Float(gt=1), default=100.0),
        # TensorBoard event files in WORKDIR/tensorboard (jaxnas/core/tensorboard.py); None: on when
        # tensorboardX is installed (a dependency of jaxnas)
        "tensorboard": S.Optional(S.Bool()),
        # or [[kind, steps], ...], kind weights | strategy | both (then steps = their sum)
        "phases": S.Optional(S.List(S.Tuple(S.Choice(*PHASE_KINDS), S.Int(ge=0)), min_len=1, doc=(
            "a non-empty list of [kind, steps] pairs, kind one of 'weights', 'strategy', 'both' and "
            "steps an int >= 0"))),
        "samples": S.Optional(S.Int(ge=1)),  # samples (lanes) per step; default: one per device
        "batch_size": S.Int(256, ge=1),
        "val_batch_size": S.Optional(S.Int(ge=1)),
        "chunk": S.Int(50, ge=1),            # steps per compiled call (lax.scan)
        "trace_cache": S.Bool(True),         # traced chunks kept beside the compilation cache (core/trace_cache.py)
        # on CPU, who runs single convolutions: "xla" (XLA's own: faster here) or "ynnpack" (XLA:CPU's
        # default); core/cpu_compile.py. Other platforms: XLA's defaults either way
        "cpu_convolutions": S.Choice("xla", "ynnpack", default="xla"),
        "checkpoint_every": S.Int(500, ge=1),
        "devices": S.Either(S.Int(ge=1), S.Choice("all"), default=1),  # 1, a number, or "all": one sample per device
        "reward": S.Choice(*TASK_REWARDS, default="neg_loss"),  # shared_weights: neg_loss | accuracy
        "eval_batch_size": S.Int(2048, ge=1),
        # one search over several processes/hosts (jaxnas.engine.distributed); None: jax.distributed.initialize
        # finds it (JAX_COORDINATOR_ADDRESS, Cloud TPU, SLURM, Open MPI, Kubernetes). Run-neutral keys.
        "distributed": {
            "enabled": S.Bool(False),                    # or JAXNAS_DISTRIBUTED=1 in the environment
            "coordinator_address": S.Optional(S.Str()),  # "host:port" of process 0 (runs the coordinator)
            "num_processes": S.Optional(S.Int(ge=1)),
            "process_id": S.Optional(S.Int(ge=0)),       # differs per process: give it on the command line
            "local_device_ids": S.Optional(S.List(S.Int(ge=0), min_len=1)),   # e.g. the GPUs of this process
            "initialization_timeout": S.Int(300, ge=1),  # seconds to wait for every process to connect
        },
    },
}
DEFAULTS: dict = S.defaults(SCHEMA)


TAGGED = ("space", "evaluator", "strategy")


def _merge(base: dict, update: dict, problems: list, path: str = "") -> dict:
    """``base`` updated with ``update``; unknown keys are added to ``problems`` (and skipped)."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        where = f"{path}{k}"
        if path.rstrip(".") in TAGGED:
            out[k] = v
            continue
        if k not in base:
            problems.append(f"unknown config key {where!r}; valid keys here: {', '.join(sorted(base))}")
            continue
        if k in TAGGED and not path and isinstance(v, dict) and v.get("name", base[k].get("name")) != base[k].get("name"):
            out[k] = dict(v)  # another space/evaluator/strategy: the old one's keys do not apply
            continue
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                problems.append(f"{where} must be a dict of {', '.join(sorted(base[k]))}, got {v!r}")
                continue
            out[k] = _merge(base[k], v, problems, where + ".")
        else:
            out[k] = v
    return out


def parse_override(item: str, example: str = "key.sub=value") -> tuple[str, object]:
    """``"search.steps=10"`` -> ``("search.steps", 10)`` (a Python literal, else the bare string)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like {example}")
    key, _, raw = item.partition("=")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a bare string
    return key.strip(), value


def parse_overrides(items) -> dict:
    """``["search.steps=10", "strategy.lr=0.1"]`` -> nested dict (values as Python literals)."""
    out: dict = {}
    for item in items:
        key, value = parse_override(item)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is given a value and sub-keys")
        node[parts[-1]] = value
    return out


def load_config(path, overrides=()) -> dict:
    """Loads ``get_config()`` from ``path``, applies overrides, checks every key."""
    return resolve(raw_config(path), overrides)


class ConfigFileError(ValueError):
    """A config file does not run (syntax error, exception in ``get_config()``): names file:line."""


def _where(exc: BaseException, p: Path) -> str:
    """``file:line`` of the innermost frame of ``exc`` in the config file ``p``."""
    line = None
    for fs in traceback.extract_tb(exc.__traceback__):
        if Path(fs.filename).resolve() == p.resolve():
            line = fs.lineno
    return f"{p}:{line}" if line else str(p)


SHIPPED = Path(__file__).resolve().parents[1] / "configs"


def shipped_configs() -> list[str]:
    """Names of the configs shipped inside the package (``jaxnas search NAME`` runs one)."""
    return sorted(f.stem for f in SHIPPED.glob("*.py") if not f.name.startswith("_"))


def resolve_config_path(path) -> Path:
    """``path`` if it exists, else a shipped config's file when ``path`` is its bare name
    (``quickstart`` or ``quickstart.py``), so a pip-installed jaxnas runs its configs without a clone."""
    p = Path(path)
    if p.exists():
        return p
    name = p.name[:-3] if p.name.endswith(".py") else p.name
    if str(p) in (name, name + ".py") and (SHIPPED / f"{name}.py").exists() and not name.startswith("_"):
        return SHIPPED / f"{name}.py"
    raise FileNotFoundError(f"config file {str(p)!r} not found: give the path of a Python file with get_config() "
                            f"or the name of a shipped config ({', '.join(shipped_configs())})")


def raw_config(path) -> dict:
    """``get_config()`` of a config file, unresolved (configs that extend another one call this).

    A syntax error or an exception while running the file raises :class:`ConfigFileError` (a
    ValueError) naming ``file:line``."""
    p = resolve_config_path(path)
    spec = importlib.util.spec_from_file_location(f"jaxnas_config_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigFileError(f"{p} has no get_config() function")
        config = module.get_config()
    except ConfigFileError:
        raise
    except SyntaxError as e:   # IndentationError included
        where = f"{e.filename or p}:{e.lineno}" if e.lineno else str(p)
        text = f"\n    {e.text.strip()}" if e.text and e.text.strip() else ""
        raise ConfigFileError(f"config file {where}: {type(e).__name__}: {e.msg}{text}") from None
    except Exception as e:  # noqa: BLE001  (whatever the user's code raised, with its line)
        raise ConfigFileError(f"config file {_where(e, p)}: {type(e).__name__}: {e}") from e
    if not isinstance(config, dict):
        raise ConfigFileError(f"{p}: get_config() must return a dict, got {type(config).__name__}")
    return config


def _tagged(section: str, given: dict, entry, problems: list) -> dict:
    """``given`` completed with the registered defaults of its name (``entry(name)``: the registered
    factory with ``.schema``), its values checked; unknown names/keys/bad values go to ``problems``."""
    name = given.get("name")
    try:
        fn = entry(name)
    except ValueError as e:   # lists the valid names
        problems.append(f"{section}.name: {e}")
        return dict(given)
    unknown = sorted(set(given) - {"name"} - set(fn.defaults))
    if unknown:
        problems.append(f"unknown config key(s) {', '.join(f'{section}.{k}' for k in unknown)} for "
                        f"{section}.name={name!r}; its keys are: {', '.join(sorted(fn.defaults)) or '(none)'}")
    out = {"name": name, **copy.deepcopy(fn.defaults),
           **{k: v for k, v in given.items() if k != "name" and k not in unknown}}
    out, bad = S.check(fn.schema, out, f"{section}.")
    problems += bad
    return out


def resolve(config: dict, overrides=()) -> dict:
    """``config`` completed with the defaults, ``overrides`` applied, every value checked: one
    ValueError lists every unknown key and every value of the wrong type or range."""
    if not isinstance(config, dict):
        raise ValueError(f"a config is a dict (what get_config() returns), got {type(config).__name__}")
    problems: list[str] = []
    cfg = _merge(DEFAULTS, config, problems)
    cfg = _merge(cfg, parse_overrides(overrides), problems)
    cfg, bad = S.check({k: v for k, v in SCHEMA.items() if k not in TAGGED}, cfg)
    problems += bad
    bad_keys = {p.split(" ")[0].rstrip(":") for p in problems}
    cfg["space"] = _tagged("space", cfg["space"], SPACES.get, problems)
    cfg["evaluator"] = _tagged("evaluator", cfg["evaluator"], get_evaluator, problems)
    strat = cfg["strategy"]
    if "name" not in strat:
        problems.append("strategy.name is required (e.g. 'reinforce', 'tabnas', 'darts')")
    elif "total_steps" in strat:
        problems.append("strategy.total_steps is set by the engine (the strategy steps of the schedule: "
                        "search.steps minus search.warmup_steps, or the non-'weights' search.phases); "
                        "remove it from the config")
    elif isinstance(strat["name"], str):
        problems += check_options(strat["name"], {k: v for k, v in strat.items() if k != "name"}, "strategy.")
    else:
        problems.append(f"strategy.name must be a strategy name (a string), got {strat['name']!r}")
    problems += _cross_checks(cfg, bad_keys)
    S.raise_if(problems)
    return cfg


def _cross_checks(cfg: dict, bad_keys: set) -> list[str]:
    """Checks between keys (those whose values are already fine); fills in search.steps from phases."""
    problems = []
    s, d = cfg["search"], cfg["data"]
    ok = lambda *keys: not any(k in bad_keys for k in keys)  # noqa: E731
    if s["phases"] is not None and ok("search.phases", "search.warmup_steps"):
        if s["warmup_steps"]:
            problems.append("search.phases and search.warmup_steps: give one, not both (a warm-up is a "
                            "['weights', N] phase)")
        s["steps"] = sum(n for _, n in s["phases"])
        if s["steps"] < 1:
            problems.append(f"search.phases {s['phases']} have no steps")
    if ok("search.checkpoint_every", "search.chunk") and s["checkpoint_every"] % s["chunk"]:
        problems.append(f"search.checkpoint_every ({s['checkpoint_every']}) must be a multiple of "
                        f"search.chunk ({s['chunk']})")
    dist = s["distributed"]
    if (isinstance(dist.get("num_processes"), int) and isinstance(dist.get("process_id"), int)
            and not dist["process_id"] < dist["num_processes"]):
        problems.append(f"search.distributed.process_id ({dist['process_id']}) must be < "
                        f"search.distributed.num_processes ({dist['num_processes']}): processes are numbered "
                        f"0 .. num_processes-1")
    if d["test_split"] is not None and d["test_split"] == d["val_split"] and ok("data.test_split"):
        problems.append(f"data.test_split and data.val_split are both {d['val_split']!r}: the test split "
                        f"must be one the search never sees")
    files = [(k, d[k]) for k in ("path", "val_path", "test_path") if d[k] is not None and ok(f"data.{k}")]
    for i, (k, v) in enumerate(files):
        for k2, v2 in files[:i]:
            if Path(v).expanduser().resolve() == Path(v2).expanduser().resolve():
                problems.append(f"data.{k} and data.{k2} are the same file ({v!r}); give separate files")
    return problems
