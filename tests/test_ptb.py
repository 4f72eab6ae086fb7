"""PTB language-model search: the data set, the evaluator's carried hidden states (truncated BPTT),
clear errors, and a CI-fast search -> retrain on a slice of PTB."""
import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.config.experiment import build
from jaxnas.config.settings import load_config
from jaxnas.data.tabular import DataNotFoundError
from jaxnas.data.text import batchify, load_lm_data, windows_per_epoch

REPO = Path(__file__).resolve().parents[1]
PTB = REPO.parent / "shared" / "data" / "ptb"
TINY = REPO / "configs" / "advantagenas_ptb_tiny.py"
needs_ptb = pytest.mark.skipif(not (PTB / "ptb.train.txt.gz").exists(), reason="PTB not beside the repository")


@needs_ptb
def test_ptb_data_and_app_e_epoch():
    d = load_lm_data(PTB, max_train=1000, max_val=300)
    assert d.vocab_size == 10_000 and len(d.x_train) == 1000 and len(d.x_val) == len(d.x_test) == 300
    assert d.corpus.decode(d.x_train[:3]) == ["aer", "banknote", "berlitz"]
    assert len(d.corpus.train) == 929_589 and len(d.corpus.valid) == 73_760   # SOURCE.md
    assert windows_per_epoch(929_589, 256, 35) == 103                          # App. E epoch


def test_missing_ptb_says_how_to_get_it(tmp_path):
    cfg = load_config(TINY, [f"data.data_dir={str(tmp_path)!r}"])
    with pytest.raises(DataNotFoundError, match="simple-examples"):
        build(cfg)


def _tiny(*over):
    base = ["space.dropout=0.0", "data.max_train=2000", "data.max_val=600", "search.batch_size=4",
            "space.bptt=5", "search.steps=4", "search.chunk=4"]
    return build(load_config(TINY, base + list(over)))


@needs_ptb
def test_evaluator_carries_hidden_state_across_windows():
    """Window t+1 starts from the state window t ended in; an epoch starts from zeros; the reward
    scores the next window from the carried state ('train') or walks the validation stream ('valid')."""
    exp = _tiny()
    ev, net = exp.evaluator, exp.task.net
    assert not ev.needs_batches and ev.train_windows == (2000 // 4 - 1) // 5
    src = batchify(exp.data.x_train, 4)
    inputs = ev.inputs()
    st = ev.init(jax.random.key(0))
    w = exp.space.one_hot(jnp.array([1, 2, 3, 4, 1, 2]))
    fwd_j = jax.jit(lambda p, x, h: net.apply({"params": p}, x, h, w))
    fwd = lambda p, t, h: fwd_j(p, jnp.asarray(src[5 * t: 5 * t + 5]), h)[1]
    h = jnp.zeros((4, exp.space.hidden_size))
    step = jax.jit(ev.weight_step)
    for t in range(3):
        p_before = st.params
        st, m = step(st, inputs, w, None, jax.random.key(t))
        h = fwd(p_before, t, h)                      # the same window, from the carried state
        chex.assert_trees_all_close(st.hidden, h, atol=1e-6)
        assert int(st.pos) == t + 1 and np.isfinite(float(m["train_loss"]))
    # the reward: the next training window (pos 3) from the carried state
    r, aux = ev.reward_fn(st, inputs, None, None)(w)
    x, y = src[15:20], src[16:21]
    logits, _ = fwd_j(st.params, jnp.asarray(x), h)
    ref = jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(5)[:, None], jnp.arange(4)[None], y])   # -loss
    chex.assert_trees_all_close(r, ref, atol=1e-5)
    # an epoch boundary: back to window 0 from a zero state
    st = st.replace(pos=jnp.asarray(ev.train_windows - 1, jnp.int32))
    st2, _ = step(st, inputs, w, None, jax.random.key(9))
    assert int(st2.pos) == 0
    b = ev._train_batch(st2, inputs)
    assert float(jnp.abs(b[2]).max()) == 0.0
    # reward on the validation stream: the weight step walks it, the reward scores the next window
    exp_v = _tiny("space.reward_split='valid'", "search.val_batch_size=2")
    ev_v = exp_v.evaluator
    inp_v = ev_v.inputs()
    st_v = ev_v.init(jax.random.key(0))
    st_v, _ = jax.jit(ev_v.weight_step)(st_v, inp_v, w, None, jax.random.key(1))
    assert int(st_v.reward_pos) == 1 and float(jnp.abs(st_v.reward_hidden).max()) > 0
    xv, yv, hv = ev_v._reward_batch(st_v, inp_v)
    vsrc = batchify(exp_v.data.x_val, 2)
    np.testing.assert_array_equal(np.asarray(xv), vsrc[5:10])


@needs_ptb
def test_errors_before_compiling():
    with pytest.raises(ValueError, match="'strategy' phase"):
        _tiny("search.phases=[['weights', 2], ['strategy', 2]]")
    with pytest.raises(ValueError, match="BPTT window"):
        _tiny("search.batch_size=1000")
    with pytest.raises(ValueError, match="neg_loss"):
        _tiny("search.reward='accuracy'")


@needs_ptb
def test_search_then_retrain_end_to_end(tmp_path, capsys):
    """A few search steps through the runner and a few retrain steps of the derived cell (`jaxnas retrain`)."""
    from jaxnas.cli import main as cli_main
    from jaxnas.runner import run_search
    cfg = load_config(TINY, ["search.steps=12", "search.chunk=6", "search.checkpoint_every=6",
                             "data.max_train=4000", "data.max_val=800", "space.bptt=8"])
    res = run_search(cfg, tmp_path / "w", progress=None)
    assert res["finished"] and res["strategy"] == "advantage"
    assert 1.0 < res["val_perplexity"] < 2 * 10_000 and np.isfinite(res["val_loss"])
    rows = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(np.isfinite(r["weights/train_loss"]) for r in rows)
    # through the CLI, which reports perplexities for this protocol
    assert cli_main(["retrain", str(tmp_path / "w"), "epochs=1", "max_steps=5", "eval_batch=4", "--quiet",
                     "--no-compile-cache"]) == 0
    printed = capsys.readouterr().out
    assert "val perplexity" in printed and "test perplexity" in printed and "best on validation" in printed
    out = json.loads((tmp_path / "w" / "retrain.json").read_text())
    best = out["best"]
    assert out["protocol"] == "rnn" and best["arch"] == res["arch"]
    assert 1.0 < best["val_perplexity"] < 2 * 10_000 and 1.0 < best["test_perplexity"] < 2 * 10_000
    assert best["param_count"] == int(res["param_count"])
