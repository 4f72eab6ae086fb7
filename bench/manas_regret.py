"""MANAS and MANAS-LS on synthetic multi-agent bandits (Carlucci et al. sec. 4.3, App. D).

    python bench/manas_regret.py [--seeds 20] [--horizon 4000] [--agents 14 112]

N agents (14 and 112), K = 8 ops each; the loss of a joint action ``a`` at round t is in [0, 1]:

- ``stochastic``: ``L_t(a) = mean_i mu[i, a_i] + eps_t``, ``eps_t ~ N(0, 0.05^2)``; per agent one
  best op (``mu = 0.3``), the others ``U[0.45, 0.8]``: an agent's own gap is ``>= 0.15 / N`` of the
  loss, which is why N = 112 needs longer horizons;
- ``adversarial``: ``L_t(a) = mean_i beta_t[i, a_i]``, ``beta_t = clip(mu + 0.3 sin(2 pi t / 500 +
  phi), 0, 1)`` (an oblivious adversary; the best op of an agent changes over time);
- ``nonlinear``: ``(linear + 0.5 x the fraction of neighbouring agent pairs (i, i+1) that are both
  off their best op) / 1.5`` plus the noise (interactions; the best joint action is still ``argmin
  mu`` per agent, so it is known exactly).

Reported per bandit:

- MANAS (coordinated + EXP3, App. B.1 defaults from T): cumulative pseudo-regret
  ``R_T = sum_t E[L_t(a_t)] - min_a sum_t E[L_t(a)]`` (expected losses of the sampled actions) at
  several T, against Theorem 2's ``2 N sqrt(T K ln K)`` (vacuous while it exceeds T, as losses are
  in [0, 1]) and the single-agent EXP3 bound ``2 sqrt(T K ln K)``; ``R_T / T`` falls; also MANAS with
  App. B.1's rates *as printed* (see jaxnas/strategies/manas.py), REINFORCE (Adam lr 0.05) and random.
- MANAS-LS (least squares + Zipf): the fraction of seeds whose recommendation (``derive``) is the
  best joint action, at several T, and the exponential rate fitted to ``1 - fraction ~ C exp(-T / H)``
  (Theorem 1: simple regret ``O(exp(-T / H))``); REINFORCE (argmax) and random search (best
  sampled action) for comparison.

Writes bench/results/manas_regret.json and manas_regret.png.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxnas.spaces.base import Space  # noqa: E402
from jaxnas.strategies import make  # noqa: E402
from jaxnas.strategies.manas import exp3_rates  # noqa: E402

K = 8
NOISE = 0.05       # sd of the stochastic losses' Gaussian noise
OUT = REPO / "bench" / "results"


def make_bandit(kind: str, n: int, seed: int, T: int):
    """Parameters of one bandit (arrays, so one compiled program serves every seed): ``mu``, ``phi``
    and the best joint action in hindsight ``a_star`` (per agent for the linear losses; ``argmin mu``
    for the nonlinear one, whose interaction term is 0 there)."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.45, 0.8, (n, K))
    mu[np.arange(n), rng.integers(0, K, n)] = 0.3          # one best op per agent, gap >= 0.15
    mu = mu.astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi, (n, K)).astype(np.float32)
    a_star = np.argmin(mu, -1)
    if kind == "adversarial":
        ts = np.arange(T, dtype=np.float32)[:, None, None]
        a_star = np.argmin(np.clip(mu + 0.3 * np.sin(2 * np.pi * ts / 500.0 + phi), 0, 1).sum(0), -1)
    return mu, phi, a_star.astype(np.int32)


def losses(kind: str):
    """(mean_loss(a, t, mu, phi), sample_loss(a, t, key, mu, phi)), both in [0, 1]."""
    def beta(t, mu, phi):
        if kind == "adversarial":
            return jnp.clip(mu + 0.3 * jnp.sin(2 * jnp.pi * t / 500.0 + phi), 0.0, 1.0)
        return mu

    def interaction(a, mu):
        off = a != jnp.argmin(mu, -1)
        return 0.5 * jnp.mean(off[:-1] & off[1:])

    def mean_loss(a, t, mu, phi):
        m = jnp.mean(beta(t, mu, phi)[jnp.arange(a.shape[0]), a])
        return (m + interaction(a, mu)) / 1.5 if kind == "nonlinear" else m

    def sample_loss(a, t, key, mu, phi):
        if kind == "adversarial":
            return mean_loss(a, t, mu, phi)
        return mean_loss(a, t, mu, phi) + NOISE * jax.random.normal(key)
    return mean_loss, sample_loss


def run_strategy(name, opts, kind, n, T, seeds, n_chunks, derive_every=0):
    """Per seed: the expected-loss gaps of the sampled actions to the best joint action ``[seeds, T]``,
    and (derive_every > 0) whether ``derive`` is the best joint action after every derive_every
    chunks ``[seeds, n_chunks // derive_every]``. Seeds are vmapped, except for least-squares credit
    (its solve sits in a lax.cond that a vmapped step counter would turn into a solve every step)."""
    space = Space(decision_names=tuple(f"agent{i}" for i in range(n)),
                  choices=tuple(tuple(f"op{k}" for k in range(K)) for _ in range(n)))
    s = make(name, space, total_steps=T, **opts)
    mean_loss, sample_loss = losses(kind)
    L = T // n_chunks

    def body(carry, inp):
        st, mu, phi, a_star = carry
        t, key = inp
        k_step, k_loss = jax.random.split(key)
        reward_fn = lambda w: (-sample_loss(jnp.argmax(w, -1), t, k_loss, mu, phi), None)
        new, _ = s.step(st, k_step, reward_fn)
        # the action step sampled: sample() with step's key (MANAS sets its EXP3 rates first)
        a = s.sample(st.replace(lr=new.lr, explore=new.explore) if hasattr(st, "lr") else st, k_step)[0]
        return (new, mu, phi, a_star), mean_loss(a, t, mu, phi) - mean_loss(a_star, t, mu, phi)

    def chunk(st, t0, keys, mu, phi, a_star):
        ts = t0 + jnp.arange(L, dtype=jnp.float32)
        (st, *_), g = jax.lax.scan(body, (st, mu, phi, a_star), (ts, keys))
        return st, g

    hit = lambda st, a_star: jnp.all(s.derive(st) == a_star)
    bandits = [make_bandit(kind, n, seed, T) for seed in range(seeds)]
    mu, phi, a_star = (jnp.asarray(np.stack(x)) for x in zip(*bandits))
    keys = jnp.stack([jax.random.split(jax.random.key(10_000 + i), T) for i in range(seeds)])
    init = jax.vmap(s.init)(jax.vmap(jax.random.key)(jnp.arange(seeds)))
    if getattr(s, "phases", None) is None or not opts.get("collect_steps"):
        fc = jax.jit(jax.vmap(chunk, in_axes=(0, None, 0, 0, 0, 0)))
        fh = jax.jit(jax.vmap(hit))
        st, gaps, found = init, [], []
        for c in range(n_chunks):
            st, g = fc(st, float(c * L), keys[:, c * L:(c + 1) * L], mu, phi, a_star)
            gaps.append(np.asarray(g))
            if derive_every and (c + 1) % derive_every == 0:
                found.append(np.asarray(fh(st, a_star)))
        return np.concatenate(gaps, 1), np.asarray(found, float).T
    fc, fh = jax.jit(chunk), jax.jit(hit)
    gaps, found = [], []
    for i in range(seeds):
        st = jax.tree.map(lambda x: x[i], init)
        g_i, f_i = [], []
        for c in range(n_chunks):
            st, g = fc(st, float(c * L), keys[i, c * L:(c + 1) * L], mu[i], phi[i], a_star[i])
            g_i.append(np.asarray(g))
            if derive_every and (c + 1) % derive_every == 0:
                f_i.append(bool(fh(st, a_star[i])))
        gaps.append(np.concatenate(g_i))
        found.append(f_i)
    return np.stack(gaps), np.asarray(found, float)


def fit_rate(ts, frac):
    """Least squares of log(1 - frac) = log C - T / H over checkpoints with 0 < 1 - frac < 1."""
    ts, miss = np.asarray(ts, float), 1.0 - np.asarray(frac, float)
    sel = (miss > 0) & (miss < 1)
    if sel.sum() < 2:
        return None
    slope, icept = np.polyfit(ts[sel], np.log(miss[sel]), 1)
    return {"rate_per_step": float(-slope), "H": float(-1.0 / slope) if slope < 0 else None,
            "C": float(np.exp(icept)), "points": int(sel.sum())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--horizon", type=int, default=4000, help="T for N = 14; N = 112 gets --horizon-112")
    ap.add_argument("--horizon-112", type=int, default=8000)
    ap.add_argument("--ls-seeds", type=int, default=10, help="MANAS-LS seeds (a loop: its solves are not vmapped)")
    ap.add_argument("--agents", type=int, nargs="+", default=[14, 112])
    ap.add_argument("--kinds", nargs="+", default=["stochastic", "adversarial", "nonlinear"])
    ap.add_argument("--out", default=str(OUT / "manas_regret.json"))
    ap.add_argument("--merge", action="store_true", help="merge into --out (keep other runs' bandits)")
    args = ap.parse_args()
    n_chunks, every = 20, 2
    results = {}
    for n in args.agents:
        T = args.horizon_112 if n == 112 else args.horizon
        if T % n_chunks:
            raise SystemExit(f"horizons must be multiples of {n_chunks}")
        checkpoints = [T // n_chunks * (c + 1) for c in range(n_chunks)]      # regret
        rec_points = checkpoints[every - 1::every]                             # recommendations
        for kind in args.kinds:
            t_start = time.perf_counter()
            row = {"N": n, "K": K, "T": T, "checkpoints": checkpoints, "recommendation_points": rec_points,
                   "seeds": args.seeds, "manas_ls_seeds": args.ls_seeds}
            lr_p, ex_p = exp3_rates(K, T, printed=True)
            cum = {}
            for label, name, opts in (("manas", "manas", {}),
                                      ("manas + baseline", "manas", {"baseline": True}),
                                      ("manas (lr x 10)", "manas", {"lr": 10 * exp3_rates(K, T)[0]}),
                                      ("manas (App. B.1 rates as printed)", "manas", {"lr": lr_p, "explore": ex_p}),
                                      ("reinforce", "reinforce", {"lr": 0.05}),
                                      ("random", "random", {})):
                g, _ = run_strategy(name, opts, kind, n, T, args.seeds, n_chunks)
                c = np.cumsum(g, 1)                           # [seeds, T]
                cum[label] = {"R_T": [float(c[:, t - 1].mean()) for t in checkpoints],
                              "R_T_std": [float(c[:, t - 1].std(ddof=1)) for t in checkpoints],
                              "R_T_se": [float(c[:, t - 1].std(ddof=1) / np.sqrt(len(c))) for t in checkpoints],
                              "R_T_over_T": [float(c[:, t - 1].mean() / t) for t in checkpoints]}
            row["cumulative_regret"] = cum
            row["bound_2N_sqrt_TKlnK"] = [2 * n * math.sqrt(t * K * math.log(K)) for t in checkpoints]
            row["bound_2_sqrt_TKlnK"] = [2 * math.sqrt(t * K * math.log(K)) for t in checkpoints]
            m = cum["manas"]
            row["manas_below_2N_bound"] = all(r < b for r, b in zip(m["R_T"], row["bound_2N_sqrt_TKlnK"]))
            row["manas_below_2N_bound_vacuous"] = all(b >= t for b, t in zip(row["bound_2N_sqrt_TKlnK"], checkpoints))
            row["manas_below_single_agent_bound"] = all(r < b for r, b in zip(m["R_T"], row["bound_2_sqrt_TKlnK"]))
            row["manas_R_T_over_T_falls"] = bool(m["R_T_over_T"][-1] < m["R_T_over_T"][0])
            simple = {}
            for label, name, opts in (("manas_ls", "manas_ls", {"collect_steps": 2 * T // n_chunks}),
                                      ("manas", "manas", {}),
                                      ("manas + baseline", "manas", {"baseline": True}),
                                      ("reinforce (argmax)", "reinforce", {"lr": 0.05}),
                                      ("random (best sampled)", "random", {})):
                _, hit = run_strategy(name, opts, kind, n, T, args.seeds if name != "manas_ls" else args.ls_seeds,
                                      n_chunks, derive_every=every)
                frac = hit.mean(0)
                simple[label] = {"best_joint_fraction": [float(f) for f in frac]}
                if name == "manas_ls":
                    simple[label]["fit"] = fit_rate(rec_points, frac)
            row["recommendation"] = simple
            row["seconds"] = round(time.perf_counter() - t_start, 1)
            results[f"N{n}_{kind}"] = row
            write(args, results, final=False)           # a partial file after every bandit
            print(f"N={n:3d} {kind:11s} R_T/T manas {m['R_T_over_T'][0]:.4f} -> {m['R_T_over_T'][-1]:.4f} "
                  f"(R_T {m['R_T'][-1]:.1f}, 2sqrt(TKlnK) {row['bound_2_sqrt_TKlnK'][-1]:.0f}); "
                  f"LS best-joint {simple['manas_ls']['best_joint_fraction']} ({row['seconds']} s)", flush=True)
    write(args, results, final=True)
    print(f"wrote {args.out}")


def markdown(results: dict) -> str:
    """The README table: per bandit and method, R_T / T at the first and last checkpoint, R_T at T with
    its s.e. (ddof = 1; '–' for rows run before the s.e. was stored), and the fraction of seeds whose
    recommendation at T is the best joint action."""
    lines = ["| bandit (N agents, T) | method | R_T/T first → last | R_T at T ± s.e. | best joint action at T |",
             "|---|---|---|---|---|"]
    for key, r in results["results"].items():
        rec = r.get("recommendation", {})
        for label, c in r["cumulative_regret"].items():
            se = c.get("R_T_se")
            hit = (rec.get(label) or rec.get(f"{label} (argmax)") or rec.get(f"{label} (best sampled)") or {})
            frac = hit.get("best_joint_fraction")
            lines.append(f"| {key.split('_', 1)[1]} ({r['N']}, {r['T']}) | {label} | {c['R_T_over_T'][0]:.3f} → "
                         f"{c['R_T_over_T'][-1]:.3f} | {c['R_T'][-1]:.0f}" + (f" ± {se[-1]:.0f}" if se else " ± –")
                         + f" | {'–' if frac is None else f'{frac[-1]:.2f}'} |")
        if "manas_ls" in rec:
            lines.append(f"| {key.split('_', 1)[1]} ({r['N']}, {r['T']}) | manas_ls | – | – | "
                         f"{rec['manas_ls']['best_joint_fraction'][-1]:.2f} |")
    return "\n".join(lines)


def write(args, results, final: bool):
    cmd = "python bench/manas_regret.py " + " ".join(sys.argv[1:])
    commands = {cmd: sorted(results)}
    if args.merge and Path(args.out).exists():          # keep the rows of other runs
        old = json.loads(Path(args.out).read_text())
        results = {**old["results"], **results}
        commands = {**old.get("commands", {old.get("command", "?"): sorted(old["results"])}), **commands}
    out = {"command": cmd, "commands": commands, "seeds": args.seeds,
           "complete": final,
           "what": ("synthetic multi-agent bandits, losses in [0, 1]: MANAS cumulative pseudo-regret vs "
                    "Theorem 2's bound; MANAS-LS fraction of seeds recommending the best joint action"),
           "results": results}
    Path(args.out).write_text(json.dumps(out, indent=1))
    plot(out, Path(args.out).with_suffix(".png"))


def plot(out, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = out["results"]
    fig, axes = plt.subplots(2, len(res), figsize=(3.2 * len(res), 6), squeeze=False)
    for j, (name, row) in enumerate(res.items()):
        ts = row["checkpoints"]
        ax = axes[0, j]
        for label, c in row["cumulative_regret"].items():
            ax.plot(ts, c["R_T_over_T"], marker="o", ms=3, label=label)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("T")
        if j == 0:
            ax.set_ylabel("R_T / T")
            ax.legend(fontsize=6)
        ax = axes[1, j]
        for label, c in row["recommendation"].items():
            ax.plot(row["recommendation_points"], c["best_joint_fraction"], marker="o", ms=3, label=label)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("T")
        if j == 0:
            ax.set_ylabel("fraction of seeds: best joint action")
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
