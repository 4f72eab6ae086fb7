"""jaxnas retrain: TabNAS Alg. 3 candidates x seeds in one program (quickstart work dir), the DARTS
evaluation network (structure, parameter count of DARTS V2, a tiny retrain on the CIFAR-10 subset with
a resume), settings checks."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.cli import main
from jaxnas.config.experiment import build
from jaxnas.config.settings import load_config, resolve
from jaxnas.models.networks import DartsEvalNet, cells_from_arch, cells_from_genotype
from jaxnas.models.networks.darts_eval import drop_path, param_count
from jaxnas.protocols.mlp import narrowed_space, restore_search_state
from jaxnas.retrain import retrain
from jaxnas.runner import run_search
from jaxnas.spaces.cells import DartsSpace
from jaxnas.training.image_runs import cutout
from jaxnas.training.standalone import TrainConfig, train_one

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10_jpeg_test5k" / "cifar10_jpeg_test5k.npz"
needs_cifar = pytest.mark.skipif(not CIFAR.exists(), reason=f"the CIFAR-10 subset {CIFAR} is not here "
                                                            f"(development machines only)")

# DARTS V2 (Liu et al. 2019, genotypes.py): 3.3M parameters on CIFAR-10 (Table 1), 3,349,342 exactly
DARTS_V2 = {"normal": [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                       ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
            "reduce": [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                       ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]}

# the retrain of the quickstart test: short, but every candidate and seed is a real training
QS_SETTINGS = {"epochs": 1, "max_steps": 30, "batch_size": 64}


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory):
    """A finished quickstart search (TabNAS on Connect-4, budget 20,000), 40 steps, answering with the
    paper's final rule (Alg. 3) so the search's answer is the first retrain candidate."""
    cfg = load_config(REPO / "configs" / "quickstart.py",
                      ["search.steps=40", "search.chunk=20", "search.checkpoint_every=20",
                       "strategy.num_mc_samples=256", "strategy.final='alg3'"])
    wd = tmp_path_factory.mktemp("quickstart")
    result = run_search(cfg, wd, progress=None)
    assert result["finished"]
    return wd


def test_quickstart_top3_x3_seeds_in_one_program(quickstart_dir):
    wd = quickstart_dir
    out = retrain(wd, QS_SETTINGS, top=3, seeds=3, progress=None)
    result = json.loads((wd / "result.json").read_text())
    cfg = json.loads((wd / "config.json").read_text())
    exp = build(cfg)
    space = exp.space
    # Alg. 3: three unique feasible candidates, largest cost first; the first is the search's answer
    cands = out["candidates"]
    assert len(cands) == 3
    idx = np.asarray([c["arch_indices"] for c in cands])
    assert len(np.unique(idx, axis=0)) == 3
    costs = [float(space.param_count(a)) for a in idx]
    assert all(c <= cfg["strategy"]["budget"] for c in costs)
    assert costs == sorted(costs, reverse=True)
    chex.assert_trees_all_equal(idx[0], np.asarray(result["arch_indices"]))
    assert [c["param_count"] for c in cands] == [int(c) for c in costs]
    # 3 candidates x 3 seeds, one compiled program
    assert out["members"] == 9 and out["programs"] == 1 and out["seeds"] == [0, 1, 2]
    assert out["steps_per_run"] == QS_SETTINGS["max_steps"]
    for c in cands:
        assert [r["seed"] for r in c["runs"]] == [0, 1, 2]
        for r in c["runs"]:
            assert np.isfinite(r["val_loss"]) and 0 <= r["val_accuracy"] <= 1 and 0 <= r["val_balanced_error"] <= 1
        chex.assert_trees_all_close(c["mean"]["val_loss"], np.mean([r["val_loss"] for r in c["runs"]]), rtol=1e-6)
    # a member of the vmapped program == the same architecture and seed trained alone
    tc = TrainConfig(epochs=1, max_steps=30, batch_size=64, lr=cfg["optimizer"]["lr"],
                     schedule=cfg["optimizer"]["schedule"], optimizer="adam")
    narrow = narrowed_space(space, idx)         # members are masked MLPs of the candidates' max widths
    assert out["member_max_widths"] == list(narrow.max_widths)
    assert all(m <= w for m, w in zip(narrow.max_widths, space.max_widths))
    alone = train_one(exp.data, narrow, idx[2], seed=1, cfg=tc)
    chex.assert_trees_all_close(alone["val_loss"], cands[2]["runs"][1]["val_loss"], rtol=1e-4)
    # the answer: the lowest mean validation loss, then its best seed
    means = [c["mean"]["val_loss"] for c in cands]
    best = out["best"]
    assert best["candidate"] == int(np.argmin(means))
    runs = cands[best["candidate"]]["runs"]
    assert best["run"] == int(np.argmin([r["val_loss"] for r in runs]))
    assert best["seed"] == runs[best["run"]]["seed"] and best["val_loss"] == min(r["val_loss"] for r in runs)
    # retrain.json holds it all; a rerun with the same settings trains nothing
    on_disk = json.loads((wd / "retrain.json").read_text())
    assert on_disk == out
    mtime = os.path.getmtime(wd / "retrain.json")
    t0 = time.perf_counter()
    again = retrain(wd, QS_SETTINGS, top=3, seeds=3, progress=None)
    assert time.perf_counter() - t0 < 5 and again == out
    assert os.path.getmtime(wd / "retrain.json") == mtime
    # other settings: refused with the differing key named, unless forced
    with pytest.raises(ValueError, match="max_steps: 30 -> 20"):
        retrain(wd, {**QS_SETTINGS, "max_steps": 20}, top=3, seeds=3, progress=None)


def test_quickstart_retrain_cli(quickstart_dir, capsys):
    args = ["retrain", str(quickstart_dir), "--top", "3", "--seeds", "3"] + \
        [f"{k}={v}" for k, v in QS_SETTINGS.items()]
    assert main(args) == 0      # same settings as the test above (module fixture): resumes = skips
    out = capsys.readouterr().out
    assert sum(l.startswith("candidate ") for l in out.splitlines()) == 3 and "best on validation:" in out
    assert main(["retrain", str(quickstart_dir), "epochs=zero", "nonsense=1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "epochs must be an int >= 1, got 'zero'" in err and "unknown retrain setting 'nonsense'" in err


def test_mlp_retrain_resumes_bit_exactly(quickstart_dir, tmp_path):
    """The MLP retrain runs on the checkpointed loop: stopped after 15 of 30 steps (checkpoint at 10)
    and rerun, it ends exactly where the uninterrupted retrain ends."""
    import shutil
    settings = {**QS_SETTINGS, "checkpoint_every": 10, "chunk": 5}
    dirs = []
    for name in ("whole", "cut"):
        wd = tmp_path / name
        shutil.copytree(quickstart_dir, wd, ignore=shutil.ignore_patterns("retrain", "retrain.json"))
        dirs.append(wd)
    whole = retrain(dirs[0], settings, top=2, seeds=2, progress=None)
    assert retrain(dirs[1], settings, top=2, seeds=2, progress=None, stop_after=15) == {"finished": False}
    assert (dirs[1] / "retrain" / "members0" / "checkpoints" / "10").exists()
    assert not (dirs[1] / "retrain.json").exists()
    resumed = retrain(dirs[1], settings, top=2, seeds=2, progress=None)
    for a, b in zip(whole["candidates"], resumed["candidates"]):
        assert [{k: v for k, v in r.items() if k != "seconds"} for r in a["runs"]] == \
            [{k: v for k, v in r.items() if k != "seconds"} for r in b["runs"]]
    assert whole["best"] == resumed["best"]


@pytest.mark.parametrize("config", ["quickstart.py", "advantagenas_nb201_tiny.py", "shapley_darts_tiny.py",
                                    "advantagenas_ptb_tiny.py", "ma2ml_digits.py"])
def test_retrain_settings_are_one_schema(config):
    """Every protocol's defaults are typed by ``protocols.SETTINGS`` and pass it; bad values of any
    protocol are listed together, in the config schema's words."""
    from jaxnas.protocols import SETTINGS
    from jaxnas.retrain import default_settings, resolve_settings
    cfg = resolve(load_config(REPO / "configs" / config))
    base = default_settings(cfg)
    assert set(base) <= set(SETTINGS), set(base) - set(SETTINGS)
    settings, data_over = resolve_settings(cfg)
    assert settings == json.loads(json.dumps(settings)) and data_over == {}
    bad = {"seeds": [1, 1], "batch_size": 0, "nonsense": 1}
    with pytest.raises(ValueError) as e:
        resolve_settings(cfg, bad)
    msg = str(e.value)
    assert "3 problems in the retrain settings" in msg, msg
    assert "seeds must be a count >= 1 or a non-empty list of distinct integer seeds, got [1, 1]" in msg
    assert "batch_size must be an int >= 1, got 0" in msg and "unknown retrain setting 'nonsense'" in msg


def test_restore_search_state_is_the_final_state(quickstart_dir):
    from jaxnas.engine.search import state_digest
    cfg = json.loads((quickstart_dir / "config.json").read_text())
    result = json.loads((quickstart_dir / "result.json").read_text())
    state = restore_search_state(build(cfg), quickstart_dir, result)
    assert state_digest(state) == result["state_digest"]
    with pytest.raises(ValueError, match="state digests differ"):
        restore_search_state(build(cfg), quickstart_dir, {**result, "state_digest": "0" * 64})


def test_unfinished_or_missing_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        retrain(tmp_path / "nope", progress=None)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="has not finished"):
        retrain(tmp_path, progress=None)


# ---- the DARTS evaluation network ----------------------------------------------------------------
def test_darts_eval_network_matches_darts_v2():
    """20 cells, C = 36: DARTS V2 has 3,349,342 parameters without its auxiliary head, as DARTS
    reports (3.3M); every node sums its two chosen inputs; 'none' edges do not exist."""
    space = DartsSpace.create(C=16, num_cells=8)
    arch = space.genotype_to_arch(DARTS_V2)
    cells = cells_from_arch(space, arch)
    assert cells == cells_from_genotype(DARTS_V2)
    assert all(len(node) == 2 for block in cells for node in block)
    net = DartsEvalNet(cells, C=36, num_cells=20, num_classes=10, auxiliary=True)
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False))
    assert param_count(shapes["params"]) == 3_349_342
    assert "aux_head" in shapes["params"] and "batch_stats" in shapes
    assert sorted(k for k in shapes["params"] if k.startswith("cell")) == sorted(f"cell{i}" for i in range(20))


def test_drop_path_and_cutout():
    x = jnp.ones((2000, 2, 2, 1))
    y = drop_path(x, 0.2, jax.random.key(0))
    kept = np.asarray(y[:, 0, 0, 0] > 0)
    assert 0.75 < kept.mean() < 0.85                      # whole examples dropped, p = 0.2
    chex.assert_trees_all_close(np.asarray(y)[kept], 1 / 0.8, rtol=1e-6)   # the rest rescaled
    chex.assert_trees_all_equal(drop_path(x, 0.0, jax.random.key(0)), x)
    img = jnp.ones((64, 32, 32, 3))
    c = np.asarray(cutout(jax.random.key(1), img, 16))
    zeros = (c[..., 0] == 0).sum((1, 2))
    assert zeros.max() == 16 * 16 and zeros.min() >= 8 * 8    # clipped at the border, as DARTS's Cutout
    assert ((c == 0).all(-1) | (c == 1).all(-1)).all()         # all channels together


def _darts_workdir(wd: Path, genotype=DARTS_V2) -> Path:
    """A finished DARTS-space search work dir (config + result) on the CIFAR-10 subset, with 1,000 of
    its images as the test split: what `jaxnas search` leaves, without the search's compile time."""
    wd.mkdir(parents=True, exist_ok=True)
    with np.load(CIFAR) as d:
        x, y, names = d["X"], d["y"], d["class_names"]
    order = np.random.default_rng(0).permutation(len(y))
    test, rest = order[:1000], order[1000:]
    np.savez(wd / "images.npz", X=x[rest], y=y[rest], class_names=names)
    np.savez(wd / "test.npz", X=x[test], y=y[test], class_names=names)
    cfg = resolve({"data": {"name": "image_npz", "path": str(wd / "images.npz"), "test_path": str(wd / "test.npz"),
                            "val_fraction": 0.5, "augment": True},
                   "space": {"name": "darts", "C": 4, "num_cells": 3}, "strategy": {"name": "darts"},
                   "search": {"steps": 10, "batch_size": 16}})
    space = DartsSpace.create(C=4, num_cells=3)
    arch = space.genotype_to_arch(genotype)
    (wd / "config.json").write_text(json.dumps(cfg))
    (wd / "result.json").write_text(json.dumps({"finished": True, **space.describe(arch), "state_digest": "test"}))
    return wd


@needs_cifar
def test_tiny_darts_retrain_on_cifar_subset_with_resume(tmp_path):
    """configs/retrain_darts_tiny.py (3 cells, C = 4, auxiliary head, cutout, drop-path, 6 steps):
    stopped after 3 steps, resumed from the step-3 checkpoint, metrics on validation and test."""
    wd = _darts_workdir(tmp_path / "darts")
    tiny = str(REPO / "configs" / "retrain_darts_tiny.py")
    assert retrain(wd, config=tiny, progress=None, stop_after=3) == {"finished": False}
    run_dir = wd / "retrain" / "c0_s0"
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [3]
    assert not (wd / "retrain.json").exists()
    # a retrain folder written before retrain.cpu_convolutions existed (a compile option) still resumes
    sfile = wd / "retrain" / "settings.json"
    ident = json.loads(sfile.read_text())
    assert ident["settings"].pop("cpu_convolutions") == "xla"
    sfile.write_text(json.dumps(ident))
    with pytest.raises(ValueError, match="with other settings"):    # a setting that changes the run does not
        retrain(wd, config=tiny, progress=None, overrides={"cutout": 8})
    log = []

    class Log:
        def write(self, s):
            log.append(s)

        def flush(self):
            pass
    out = retrain(wd, config=tiny, progress=Log())
    assert any("resuming from step 3" in s for s in log)
    s = out["settings"]
    assert (s["C"], s["num_cells"], s["auxiliary_weight"], s["cutout"], s["drop_path"], s["grad_clip"],
            s["cpu_convolutions"]) == (4, 3, 0.4, 16, 0.2, 5.0, "xla")
    (cand,) = out["candidates"]
    (run,) = cand["runs"]
    assert run["steps"] == 6
    for split in ("val", "test"):
        assert np.isfinite(run[f"{split}_loss"]) and 0 <= run[f"{split}_accuracy"] <= 1
    assert cand["model"]["network"] == "darts_eval" and cand["model"]["kwargs"]["auxiliary"]
    assert cand["genotype"].startswith("normal=")
    # parameter count: the network without its auxiliary head, from the saved variables
    from jaxnas.export import restore_tree
    final = restore_tree(wd / run["final"])
    assert "aux_head" in final["params"]
    assert run["param_count"] == param_count(final["params"]) == out["best"]["param_count"]
    assert json.loads((wd / "retrain.json").read_text())["best"]["val_loss"] == run["val_loss"]
    # export -> load: the DARTS evaluation network with its variables reproduces the validation metrics
    from jaxnas.config.experiment import load_data
    from jaxnas.export import export, input_transform, load
    from jaxnas.tasks.classification import classification_loss
    exp_dir = export(wd)
    model, variables = load(exp_dir)
    assert isinstance(model, DartsEvalNet) and model.C == 4 and model.num_cells == 3
    data = load_data(json.loads((wd / "config.json").read_text()))
    n = s["max_eval"]
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(
        variables, input_transform(exp_dir)(jnp.asarray(data.x_val[:n])))
    loss, acc = classification_loss(logits, jnp.asarray(data.y_val[:n]))
    chex.assert_trees_all_close((float(loss), float(acc)), (run["val_loss"], run["val_accuracy"]),
                                rtol=1e-4, atol=1e-5)
