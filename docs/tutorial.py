# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Tutorial: 2D U(1) gauge theory, from a flow to a pyerrors fit
#
# Compact U(1) on an 8 × 8 torus at β = 2 (the tutorial point of arXiv:2101.08176), with
# the gauge-equivariant flow shipped in `models/u1_L8_b2.toml` (weights `models/u1_L8_b2.pt`
# beside it). We
#
# 1. train a flow for a few steps, to see the training API;
# 2. sample the shipped, trained flow three exact ways: Metropolis independence chains
#    (`flow-mcmc`), i.i.d. samples with weights for reweighting (`iid=True`), and HMC
#    trajectories interleaved with flow proposals (`mixed`);
# 3. sample the same theory without a flow: HMC, and the exact direct sampler of pure 2D U(1);
# 4. compare their autocorrelation times;
# 5. hand the ensembles to [pyerrors](https://github.com/fjosw/pyerrors) (arXiv:2209.14371)
#    and fit the string tension from Wilson loops.
#
# This file is a plain Python script in jupytext's "percent" format: run it from the
# repository root with `python docs/tutorial.py`, or open it as a notebook with
# `jupytext --to notebook docs/tutorial.py`. Sizes come from the environment:
# `LATTICEFLOW_TUTORIAL_N` configurations per ensemble (default 20000, a few minutes on a
# laptop CPU), `LATTICEFLOW_TUTORIAL_STEPS` training steps (default 50) and
# `LATTICEFLOW_TUTORIAL_OUT` the output directory (default `runs/tutorial-<timestamp>/`).

# %%
import os
import time
from pathlib import Path

import numpy as np

import latticeflow
from latticeflow import ensemble

N = int(os.environ.get("LATTICEFLOW_TUTORIAL_N", "20000"))
STEPS = int(os.environ.get("LATTICEFLOW_TUTORIAL_STEPS", "50"))
OUT = Path(os.environ.get("LATTICEFLOW_TUTORIAL_OUT") or f"runs/tutorial-{time.strftime('%Y%m%d-%H%M%S')}")
OUT.mkdir(parents=True, exist_ok=True)
MODEL = "models/u1_L8_b2.toml"

exact = latticeflow.exact(MODEL)["observables"]  # torus values: plaquette, Wilson loops, χ_Q
print(f"{N} configurations per ensemble, {STEPS} training steps, output in {OUT}/")
print("exact:", {k: round(v, 6) for k, v in exact.items()})

# %% [markdown]
# ## 1. Training a flow
#
# `latticeflow.train` reads the `[flow]` and `[train]` tables of a model file and minimises
# the reverse KL divergence (the shipped weights took 38 minutes; see
# `docs/u1_flow_training.md`). A few steps show the API; the run directory holds the
# checkpoint, `metrics.jsonl` and `training.png`, and `latticeflow.sample(run_dir, …)` samples it.

# %%
run = latticeflow.train(MODEL, out=OUT / "train", steps=STEPS, progress=False)
shown = {k: round(v, 4) for k, v in run.metrics.items() if isinstance(v, float)}
print(f"trained to step {run.step} ({run.stopped}) in {run.run_dir}: {shown}")

# %% [markdown]
# ## 2. Three exact samplers of the shipped flow
#
# A model file with weights beside it is sampled directly. `flow-mcmc` accepts or rejects
# flow proposals (Metropolis independence), so its chains sample the exact distribution;
# `iid=True` keeps every proposal with its log weight log w = −S − log q, and averages are
# reweighted, ⟨O⟩ = Σ w O / Σ w; `mixed` alternates HMC trajectories with flow proposals.

# %%
files = {}
for label, options in [("flow-mcmc", {"sampler": "flow-mcmc"}), ("flow-iid", {"iid": True}),
                       ("mixed", {"sampler": "mixed"})]:
    result = latticeflow.sample(MODEL, N, out=OUT / f"{label}.h5", progress=False, **options)
    files[label] = result["path"]
    print(f"{label:10} {result['n']} configurations in {result['seconds']:.1f} s")

# %% [markdown]
# ## 3. Without a flow: HMC and the exact direct sampler
#
# HMC uses the model's `[hmc]` table. Pure 2D U(1) can also be sampled exactly and
# independently, without a flow or a Markov chain: the `direct` sampler draws the
# plaquettes from von Mises distributions with the torus constraint and builds links in a
# maximal-tree gauge. It needs no weights and has τ_int = ½ by construction: the baseline
# every flow for this theory must be measured against.

# %%
result = latticeflow.hmc(MODEL, N, out=OUT / "hmc.h5", progress=False)
files["hmc"] = result["path"]
print(f"hmc        {result['n']} configurations in {result['seconds']:.1f} s")

result = latticeflow.sample(MODEL, N, out=OUT / "direct.h5", sampler="direct", progress=False)
files["direct"] = result["path"]
print(f"direct     {result['n']} configurations in {result['seconds']:.1f} s")

# %% [markdown]
# ## 4. Autocorrelation times
#
# `latticeflow.compare` puts the ensembles side by side: means with Γ-method errors,
# τ_int, N_eff per configuration and per second, deviations from the exact values
# (`out=DIR` also writes the plots). The topological charge Q is where HMC is slow.

# %%
table, markdown, _ = latticeflow.compare(list(files.values()), labels=list(files))
print(markdown)
print()
for label in files:
    r = table["observables"]["topological_charge"][label]
    if r is not None:
        print(f"tau_int(Q) {label:10} {r['tau_int']:.2f} ± {r['tau_int_error']:.2f}")

# %% [markdown]
# ## 5. pyerrors: derived quantities and fits
#
# `latticeflow.analysis.to_pyerrors` turns an open ensemble into one `pyerrors.Obs` per
# observable, each chain a replica; the i.i.d. flow file comes back reweighted (its weight
# Obs as `"reweighting_factor"`). `latticeflow export FILE.h5 --pyerrors OUT.json.gz` writes
# the same to pyerrors' JSON format (docs/export.md). `gamma_method(S=1.5)` uses
# latticeflow's window parameter.

# %%
import pyerrors as pe  # noqa: E402
from scipy.special import i0, i1  # noqa: E402

from latticeflow.analysis import to_pyerrors  # noqa: E402
from latticeflow.analysis.export import write_pyerrors  # noqa: E402

observables = {}
for label in ("hmc", "flow-iid"):
    with ensemble.open(files[label]) as ens:
        observables[label] = to_pyerrors(ens, name=f"u1_{label}")
        if label == "hmc":
            write_pyerrors(ens, OUT / "hmc.json.gz")
for label, obs in observables.items():
    plaquette = obs["plaquette"]
    plaquette.gamma_method(S=1.5)
    print(f"plaquette ({label}): {plaquette}  exact {exact['plaquette']:.6f}  "
          f"({(plaquette.value - exact['plaquette']) / plaquette.dvalue:+.1f}σ)")
back = pe.input.json.load_json_dict(str(OUT / "hmc.json.gz"), verbose=False)
print(f"read back from {OUT / 'hmc.json.gz'}: {sorted(back)}")

# %% [markdown]
# In 2D the Wilson loops obey an area law, ⟨W(A)⟩ = (I₁(β)/I₀(β))^A in infinite volume,
# so −log W(A) = σA + c with the string tension σ = −log(I₁(β)/I₀(β)) and c = 0. The
# plaquette, 1×2 and 2×2 loops measured on the same configurations are correlated;
# pyerrors propagates that into the fit parameters.

# %%
beta = 2.0
sigma_exact = -np.log(i1(beta) / i0(beta))
areas = np.array([1.0, 2.0, 4.0])
for label, obs in observables.items():
    minus_log_w = [-np.log(obs[k]) for k in ("plaquette", "wilson_1x2", "wilson_2x2")]
    for y in minus_log_w:
        y.gamma_method(S=1.5)
    fit = pe.fits.least_squares(areas, minus_log_w, lambda a, x: a[0] * x + a[1], silent=True)
    sigma, c = fit.fit_parameters
    sigma.gamma_method(S=1.5)
    c.gamma_method(S=1.5)
    print(f"{label:8} sigma = {sigma}  c = {c}  chi2/dof = {fit.chisquare_by_dof:.2f}  "
          f"(exact sigma {sigma_exact:.6f}, {(sigma.value - sigma_exact) / sigma.dvalue:+.1f}σ)")

# %% [markdown]
# Everything the tutorial wrote is in the output directory: the training run, one HDF5
# ensemble per sampler (`latticeflow analyze FILE.h5`), and the pyerrors JSON file.

# %%
print(f"done: {sorted(p.name for p in OUT.iterdir() if not p.name.startswith('.'))}")
