#!/usr/bin/env python
"""Training / sampling step times of neumc (github.com/nmcmc/neumc) on the settings of
latticeflow's benchmarks/throughput.py, timed the same way (one thread by default,
batch 1024, median of steps 5..N; all steps if N <= 8).

Settings (built with neumc's own API only):

- ``phi4``: 2D phi^4, L = 8, m2 = -4, lam = 8 in latticeflow's convention
  S = sum_x [sum_mu (phi_{x+mu} - phi_x)^2 + m2 phi^2 + lam phi^4], written as neumc's
  ``ScalarPhi4Action(m2=2*m2, lam=24*lam, kappa=2)`` (the same function of phi);
  16 ``make_scalar_affine_layers`` couplings with ``checkerboard_masks_gen`` masks (started
  one mask later, so that layer i freezes the same sites as latticeflow's layer i),
  conditioner CNN [16, 16, 16], 3x3, circular padding, LeakyReLU; ``SimpleNormal`` prior.
- ``u1``: 2D U(1), L = 8, beta = 2, ``U1GaugeAction``; 16 ``make_u1_equiv_layers``
  couplings with ``CSCoupling`` (circular splines, n_knots = 9, i.e. 8 bins, plus a
  shift), ``u1_masks_gen`` masks, conditioner input (cos, sin) of the frozen plaquettes,
  CNN [32, 32], 3x3; ``MultivariateUniform(0, 2 pi)`` prior.  Built like
  scripts/u1.py (``--u1-builder script``, PyTorch default init) or with
  ``assemble_model_from_dict`` (``--u1-builder asm``, which also applies
  ``physics.u1.set_weights``, as in scripts/timings.py).
- ``u1-sample``: that flow's proposals without gradients, per ``--batch``: prior sample,
  flow, action and log w = -S - log q.

Training step = neumc's reparametrisation-trick estimator (``RTEstimator.step``: z from
the prior, x, log q = log r(z) - log J, loss = mean(log q - log p) = mean(log q + S),
backward), then ``clip_grad_norm_(max_norm=10)`` and ``Adam(lr=1e-3).step()``, with
``zero_grad(set_to_none=True)`` first, as latticeflow's Trainer.train_step does (default
[train] lr = 1e-3, grad_clip = 10).  The action is evaluated in float64 by default
(``--action-dtype float64``, as latticeflow does); ``--action-dtype float32`` is neumc's own
habit (its scripts call the action on the float32 fields).

neumc is not a dependency of latticeflow and nothing of it is copied here: this script only
calls its public API.  Get it from https://github.com/nmcmc/neumc and put its ``src`` on
the path (the numbers in docs/performance.md used commit 77506b5)::

    git clone https://github.com/nmcmc/neumc /tmp/neumc_src
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/neumc_src/neumc/src python benchmarks/peer_neumc.py \
        --settings phi4 u1 u1-sample --steps 12 [--compare-latticeflow .]

``--interleave-latticeflow ROOT`` takes latticeflow's steps of each setting (ROOT's
``benchmarks/throughput.py``) in turn with neumc's, in one process, and prints the ratio:
the form in which the machine's drifts cancel.

``--compare-latticeflow ROOT`` also builds latticeflow's flows of the same settings (from
ROOT/benchmarks/throughput.py's SETTINGS) and prints their parameter counts, and checks
that the neumc and latticeflow actions agree on random fields and that every layer has
the same masks (nothing of latticeflow is timed).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from neumc.nf.affine_cpl import make_scalar_affine_layers
from neumc.nf.cs_coupling import CSCoupling
from neumc.nf.gauge_masks import u1_masks_gen
from neumc.nf.nn import make_conv_net
from neumc.nf.prior import MultivariateUniform, SimpleNormal
from neumc.nf.scalar_masks import checkerboard_masks_gen
from neumc.nf.u1_equiv import make_u1_equiv_layers
from neumc.nf.u1_model_asm import assemble_model_from_dict
from neumc.physics.phi4 import ScalarPhi4Action
from neumc.physics.u1 import U1GaugeAction
from neumc.training.gradient_estimator import RTEstimator

SETTINGS = ("phi4", "u1", "u1-sample")

L = 8
PHI4 = dict(m2=-4.0, lam=8.0, layers=16, hidden=[16, 16, 16], kernel_size=3)
U1 = dict(beta=2.0, layers=16, hidden=[32, 32], kernel_size=3, bins=8)
LR = 1e-3
GRAD_CLIP = 10.0


class ActionIn:
    """Evaluate a neumc action on the fields cast to ``dtype`` (float64 like latticeflow)."""

    def __init__(self, action, dtype):
        self.action, self.dtype = action, dtype

    def __call__(self, x):
        return self.action(x.to(self.dtype))


def build_phi4(device):
    shape = (L, L)
    # latticeflow: S = sum[sum_mu (phi_{x+mu}-phi_x)^2 + m2 phi^2 + lam phi^4]
    #            = sum[(2d + m2) phi^2 - 2 sum_mu phi_x phi_{x+mu} + lam phi^4]
    # neumc:     S = sum[(m2'/2 + d kappa) phi^2 - kappa sum_mu phi_x phi_{x+mu} + lam'/24 phi^4]
    # -> kappa = 2, m2' = 2 m2, lam' = 24 lam.
    action = ScalarPhi4Action(m2=2 * PHI4["m2"], lam=24 * PHI4["lam"], kappa=2.0)
    prior = SimpleNormal(torch.zeros(shape), torch.ones(shape), device=device)
    masks = checkerboard_masks_gen(shape, device=device)
    # neumc's first mask freezes the odd sites, latticeflow's first layer the even ones
    # (mask_parity = i % 2): skip one mask so that layer i has the same frozen sites.
    next(masks)
    layers = make_scalar_affine_layers(
        lattice_shape=shape, n_layers=PHI4["layers"], masks=masks,
        hidden_channels=PHI4["hidden"], kernel_size=PHI4["kernel_size"], dilation=1,
        device=device, float_dtype=torch.float32)  # activation: LeakyReLU (default)
    return prior, layers, action


def build_u1(device, builder="script"):
    shape = (L, L)
    action = U1GaugeAction(U1["beta"])
    n_knots = U1["bins"] + 1
    if builder == "asm":  # neumc's model assembler (also applies physics.u1.set_weights)
        model = assemble_model_from_dict({
            "n_layers": U1["layers"], "masking": "u1", "coupling": "cs", "n_knots": n_knots,
            "nn": {"hidden_channels": U1["hidden"], "kernel_size": U1["kernel_size"], "dilation": 1},
            "float_dtype": torch.float32, "lattice_shape": shape}, device=device)
        return model["prior"], model["layers"], action
    # as scripts/u1.py
    masks = u1_masks_gen(lattice_shape=shape, float_dtype=torch.float32, device=device)

    def make_plaq_coupling(mask):
        net = make_conv_net(in_channels=2, out_channels=3 * (n_knots - 1) + 1,
                            hidden_channels=U1["hidden"], kernel_size=U1["kernel_size"],
                            use_final_tanh=False, dilation=1)
        return CSCoupling(net.to(device), mask, n_knots)

    layers = make_u1_equiv_layers(loops_function=None, make_plaq_coupling=make_plaq_coupling,
                                  masks=masks, n_layers=U1["layers"], device=device)
    prior = MultivariateUniform(torch.zeros((2, *shape)), 2 * torch.pi * torch.ones((2, *shape)),
                                device=device)
    return prior, layers, action


def build(name, device, u1_builder):
    return build_phi4(device) if name == "phi4" else build_u1(device, u1_builder)


def n_params(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def neumc_step(name, batch, device, action_dtype, u1_builder):
    """One step of the setting with neumc's API: ``(step() -> last, n_parameters)``."""
    prior, layers, action = build(name, device, u1_builder)
    act = ActionIn(action, action_dtype)
    estimator = RTEstimator(prior, layers, act)
    optimizer = torch.optim.Adam(layers.parameters(), lr=LR)

    def step():
        if name.endswith("-sample"):
            with torch.no_grad():
                x, log_q = layers.sample(prior, batch)
                log_w = (-act(x)).to(torch.float64) - log_q.to(torch.float64)
                log_w = log_w.cpu()
            return {"mean_log_w": float(log_w.mean())}
        optimizer.zero_grad(set_to_none=True)
        loss, log_q, log_p = estimator.step(batch)
        torch.nn.utils.clip_grad_norm_(layers.parameters(), GRAD_CLIP)
        optimizer.step()
        return {"loss": float(loss)}

    return step, n_params(layers)


def _timed(step, device):
    _sync(device)
    t0 = time.perf_counter()
    last = step()
    _sync(device)
    return time.perf_counter() - t0, last


def _kept(times):
    """The steps a median is taken of: from the fifth on, when there are more than 8."""
    return times[4:] if len(times) > 8 else times


def time_setting(name, steps, batch, device, action_dtype, u1_builder):
    step, params = neumc_step(name, batch, device, action_dtype, u1_builder)
    times, last = [], {}
    for _ in range(steps):
        t, last = _timed(step, device)
        times.append(t)
    med = statistics.median(_kept(times))
    return {"setting": name, "ms_per_step": 1e3 * med, "steps_per_second": 1 / med,
            "steps_timed": len(_kept(times)),
            "batch": batch, "device": str(device), "threads": torch.get_num_threads(),
            "params": params, **last}


def interleave_latticeflow(root, name, steps, batch, device, action_dtype, u1_builder):
    """neumc's and latticeflow's steps of one setting taken in turn in this process (so the
    machine's drifts hit both alike): their medians and the ratio latticeflow / neumc."""
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(root))
    sys.path.insert(0, str(root) + "/benchmarks")
    import throughput  # ROOT/benchmarks/throughput.py
    from latticeflow.devices import resolve

    theirs, _ = neumc_step(name, batch, device, action_dtype, u1_builder)
    where = resolve(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = throughput.make_trainer(name, batch, device, Path(tmp))
        t_neumc, t_ours = [], []
        for _ in range(steps):
            t_neumc.append(_timed(theirs, device)[0])
            t_ours.append(throughput._step(name, trainer, batch, where))
    a, b = statistics.median(_kept(t_neumc)), statistics.median(_kept(t_ours))
    return {"setting": name, "neumc_ms": 1e3 * a, "latticeflow_ms": 1e3 * b, "ratio": b / a}


def compare_latticeflow(root, names, u1_builder):
    """latticeflow's parameter counts for the same settings, and an action cross-check."""
    sys.path.insert(0, str(root))
    sys.path.insert(0, str(root) + "/benchmarks")
    from latticeflow.config import parse_config
    from latticeflow.flows import build_flow
    from latticeflow.lattice import checkerboard, gauge_mask_schedule, link_stripes_2d, plaquette_masks_2d
    import throughput  # ROOT/benchmarks/throughput.py (its SETTINGS dict)

    torch.manual_seed(0)
    for name in names:
        cfg = parse_config(throughput.SETTINGS[name])
        theory = cfg.theory.build()
        flow = build_flow(theory, cfg.flow)
        prior, layers, action = build(name, "cpu", u1_builder)
        if name == "phi4":
            x = torch.randn(16, L, L, dtype=torch.float64)
        else:
            x = 2 * math.pi * torch.rand(16, 2, L, L, dtype=torch.float64)
        diff = float((action(x) - theory.action(x)).abs().max())
        same = True  # the masks of every layer, neumc's vs latticeflow's
        if name == "phi4":
            for i, layer in enumerate(layers.layers):
                same &= torch.equal(layer.mask[0]["frozen"].bool(), checkerboard((L, L), i % 2))
        else:
            for layer, (mu, off) in zip(layers.layers, gauge_mask_schedule(len(layers.layers))):
                m, pm = plaquette_masks_2d((L, L), mu, off), layer.plaq_coupling.mask[0]
                same &= torch.equal(layer.active_links_mask.bool(), link_stripes_2d((L, L), mu, off))
                same &= all(torch.equal(pm[k].bool(), m[k]) for k in ("active", "passive", "frozen"))
        print(f"{name:<10} params: latticeflow {n_params(flow):7d}  neumc {n_params(layers):7d};  "
              f"max |S_neumc - S_latticeflow| on 16 random fields (float64): {diff:.1e};  "
              f"same masks in every layer: {same}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    p.add_argument("--steps", type=int, default=25, help="steps per setting (median of 5..N)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--action-dtype", choices=("float64", "float32"), default="float64",
                   help="dtype the action is evaluated in (latticeflow: float64)")
    p.add_argument("--u1-builder", choices=("script", "asm"), default="script",
                   help="script: as scripts/u1.py; asm: nf.u1_model_asm.assemble_model_from_dict")
    p.add_argument("--compare-latticeflow", metavar="ROOT",
                   help="also print latticeflow's parameter counts (repository root ROOT)")
    p.add_argument("--interleave-latticeflow", metavar="ROOT",
                   help="time latticeflow's steps of each setting in turn with neumc's, in this "
                        "process, and print the ratio (repository root ROOT)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    action_dtype = getattr(torch, args.action_dtype)
    rows = []
    if args.interleave_latticeflow:
        for name in args.settings:
            row = interleave_latticeflow(args.interleave_latticeflow, name, args.steps, args.batch,
                                         args.device, action_dtype, args.u1_builder)
            rows.append(row)
            print(f"{name:<10} neumc {row['neumc_ms']:8.1f} ms  latticeflow {row['latticeflow_ms']:8.1f} ms  "
                  f"latticeflow / neumc {row['ratio']:.2f}", flush=True)
        args.settings = []
    for name in args.settings:
        row = time_setting(name, args.steps, args.batch, args.device, action_dtype, args.u1_builder)
        rows.append(row)
        print(f"{name:<10} {row['ms_per_step']:9.1f} ms/step  ({row['steps_per_second']:.2f} steps/s, "
              f"batch {row['batch']}, {row['device']}, {row['threads']} thread(s), "
              f"{row['params']} parameters)", flush=True)
    if args.compare_latticeflow:
        compare_latticeflow(args.compare_latticeflow, args.settings, args.u1_builder)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"code": "neumc", "torch": torch.__version__, "action_dtype": args.action_dtype,
                       "u1_builder": args.u1_builder, "results": rows}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
