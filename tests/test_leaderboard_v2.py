"""The v2 leaderboard's summary (``bench/oneshot_v2.py``) pairs a fork only with a random fork of the
same seed's warm-up, bit for bit (the digest each fork records): a strategy forked from a warm-up
retrained after a kernel change pairs with the random reference forked from that warm-up, never
with the first random row of its seed."""
import sys
from pathlib import Path

import chex
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import oneshot_v2 as V  # noqa: E402


def _run(seed, digest, c10):
    return {"seed": seed, "warmup_digest": digest, "cifar10": c10, "cifar100": c10 - 20, "imagenet16": c10 - 50,
            "collapsed": False, "seconds": 1.0, "movement": [{"step": 0, "kl_uniform": 0.0, "mode_cifar10": c10}]}


def _v2():
    random = [_run(s, f"old{s}", 90.0 + s) for s in range(3)]
    strat = [_run(0, "old0", 91.0), _run(1, "new1", 80.0), _run(2, "new2", 81.0)]
    refs = [_run(1, "new1", 85.0), _run(2, "new2", 89.0)]
    return {"strategies": {"random": {"runs": random}, "s": {"runs": strat}}, "random_references": refs}


def test_forks_pair_with_the_random_fork_of_their_own_warm_up():
    d = V.summarise_v2(_v2())["strategies"]["s"]["minus_random_cifar10"]
    diffs = np.asarray([91.0 - 90.0, 80.0 - 85.0, 81.0 - 89.0])       # seed 0: first row; 1, 2: references
    assert d["seeds"] == 3 and d["re_run_references"] == 2 and "other_warmups" not in d
    chex.assert_trees_all_close((d["mean"], d["se"]), (diffs.mean(), diffs.std(ddof=1) / np.sqrt(3)))
    # the random row's own statistics stay its first runs', the references are not counted in them
    r = V.summarise_v2(_v2())["strategies"]["random"]
    chex.assert_trees_all_close(r["cifar10"][0], 91.0)


def test_a_fork_without_a_reference_of_its_warm_up_is_left_unpaired():
    v2 = _v2()
    v2["random_references"] = []
    d = V.summarise_v2(v2)["strategies"]["s"]["minus_random_cifar10"]
    assert d == {"seeds": 1, "re_run_references": 0, "other_warmups": 2,
                 "unpaired_mean": d["unpaired_mean"], "unpaired_se": d["unpaired_se"]}
    chex.assert_trees_all_close(d["unpaired_mean"], np.mean([91.0, 80.0, 81.0]) - 91.0)
    assert "unpaired" in V.markdown_v2({**v2, "protocol": {k: 0 for k in ("warmup", "steps", "batch", "channels",
                                                                          "cells")} | {"source": "t"}})
