"""Training study: gauge-equivariant flow for 2D U(1), L=8, β=2 (the tutorial point).

Trains with reverse KL (self-contained loop: Adam, cosine learning rate over the *wall
time* budget so the schedule always completes, gradient clipping, float32) and reports
the quality of the flow against wall time: Metropolis independence acceptance and ESS
from a fresh batch of proposals, with log w = −S − log q in float64.

Not part of CI.  Results and the commands that made them: docs/u1_flow_training.md.

Example (the shipped model's command is in that file):
    python benchmarks/u1_flow_training.py --layers 16 --bijection ncp --minutes 2
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latticeflow.config import FlowConfig  # noqa: E402
from latticeflow.flows.u1_flow import build_u1_flow  # noqa: E402
from latticeflow.theories.u1 import U1, u1_action  # noqa: E402


def u1_log_z(L: int, beta: float) -> float:
    """Exact log Z of 2D U(1) on an L×L torus for the Lebesgue measure on [0, 2π)^{2V}:
    2V log 2π + log Σ_n I_n(β)^V (docs/design.md §1), so KL(q‖p) = loss + log Z."""
    from scipy.special import ive

    V = L * L
    terms = torch.tensor([V * (math.log(ive(n, beta)) + beta) for n in range(-30, 31)], dtype=torch.float64)
    return 2 * V * math.log(2 * math.pi) + torch.logsumexp(terms, 0).item()


def independence_acceptance(log_w: torch.Tensor, generator: torch.Generator) -> float:
    """Metropolis independence chain over the proposals in order: fraction accepted."""
    log_u = torch.log(torch.rand(len(log_w), dtype=torch.float64, generator=generator))
    current, accepted = log_w[0].item(), 0
    for lw, lu in zip(log_w[1:].tolist(), log_u[1:].tolist()):
        if lu < lw - current:
            current, accepted = lw, accepted + 1
    return accepted / (len(log_w) - 1)


@torch.no_grad()
def evaluate(flow, theory, n: int, seed: int, chunk: int = 1024) -> dict:
    """ESS and independence-Metropolis acceptance of ``n`` fresh proposals, in float64."""
    flow64 = copy.deepcopy(flow).double()
    gen = torch.Generator().manual_seed(seed)
    log_w = []
    for start in range(0, n, chunk):
        x, log_q = flow64.sample(min(chunk, n - start), generator=gen)
        log_w.append(-u1_action(x, theory.beta) - log_q)
    log_w = torch.cat(log_w)
    w = torch.exp(log_w - log_w.max())
    return {
        "n": n,
        "ess": (w.sum() ** 2 / (n * (w**2).sum())).item(),
        "acceptance": independence_acceptance(log_w, gen),
        "kl": -log_w.mean().item() + u1_log_z(theory.shape[0], theory.beta),
    }


def lr_at(base: float, schedule: str, frac: float, warmup_frac: float) -> float:
    if frac < warmup_frac:
        return base * (frac / warmup_frac)
    if schedule == "constant":
        return base
    return 0.5 * base * (1 + math.cos(math.pi * min(frac, 1.0)))


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    theory = U1((args.L, args.L), beta=args.beta)
    cfg = FlowConfig(layers=args.layers, bijection=args.bijection, hidden=tuple(args.hidden),
                     kernel_size=args.kernel_size, bins=args.bins, components=args.components,
                     loops=tuple(args.loops), activation=args.activation)
    flow = build_u1_flow(theory, cfg)
    n_params = sum(p.numel() for p in flow.parameters())
    opt = torch.optim.Adam(flow.parameters(), lr=args.lr)
    frozen = copy.deepcopy(flow).requires_grad_(False) if args.estimator == "path" else None
    budget = 60 * args.minutes
    history, step, train_time = [], 0, 0.0
    next_eval = args.eval_every
    log_z = u1_log_z(args.L, args.beta)
    print(f"# {n_params} parameters; {vars(args)}", flush=True)
    while train_time < budget and step < args.max_steps:
        t0 = time.perf_counter()
        frac = train_time / budget
        for group in opt.param_groups:
            group["lr"] = lr_at(args.lr, args.schedule, frac, args.warmup)
        x, log_q = flow.sample(args.batch)
        action = u1_action(x, theory.beta)
        loss = (log_q + action).mean()
        opt.zero_grad(set_to_none=True)
        if args.estimator == "path":
            # path gradient (Roeder et al. 2017; Vaitl et al. 2022): differentiate log q only
            # through x, with the parameters of the density held fixed (a detached copy)
            frozen.load_state_dict(flow.state_dict())
            (frozen.log_prob(x) + action).mean().backward()
        else:
            loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(flow.parameters(), args.grad_clip)
        opt.step()
        train_time += time.perf_counter() - t0
        step += 1
        if step % args.log_every == 0:
            print(f"step {step:6d}  t {train_time / 60:6.2f} min  loss {loss.item():9.4f}  "
                  f"(log Z >= {-loss.item():.3f}, KL {loss.item() + log_z:.3f})  lr {opt.param_groups[0]['lr']:.2e}", flush=True)
        if train_time >= next_eval and args.eval_every > 0:
            ev = evaluate(flow, theory, args.eval_batch, seed=1000 + step)
            ev.update(step=step, minutes=train_time / 60)
            history.append(ev)
            print(f"eval  {json.dumps(ev)}", flush=True)
            next_eval += args.eval_every
    final = evaluate(flow, theory, args.final_batch, seed=args.seed + 12345)
    result = {
        "settings": vars(args),
        "parameters": n_params,
        "steps": step,
        "train_minutes": train_time / 60,
        "step_seconds": train_time / max(step, 1),
        "final": final,
        "history": history,
        "command": "python benchmarks/u1_flow_training.py " + " ".join(sys.argv[1:]),
    }
    print("final " + json.dumps(final), flush=True)
    print(f"# {step} steps in {train_time / 60:.2f} min, {1000 * train_time / max(step, 1):.1f} ms/step", flush=True)
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        torch.save(flow.state_dict(), args.save)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--L", type=int, default=8)
    p.add_argument("--beta", type=float, default=2.0)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--bijection", choices=["ncp", "spline"], default="ncp")
    p.add_argument("--hidden", type=int, nargs="+", default=[8, 8])
    p.add_argument("--kernel-size", type=int, default=3)
    p.add_argument("--bins", type=int, default=8)
    p.add_argument("--components", type=int, default=6)
    p.add_argument("--loops", nargs="+", default=["plaquette"], choices=["plaquette", "rectangle"])
    p.add_argument("--activation", default="leaky_relu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--warmup", type=float, default=0.0, help="fraction of the time budget")
    p.add_argument("--estimator", choices=["reparam", "path"], default="reparam")
    p.add_argument("--grad-clip", type=float, default=10.0)
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-time budget")
    p.add_argument("--max-steps", type=int, default=10**9)
    p.add_argument("--eval-every", type=float, default=120.0, help="seconds of training between evals")
    p.add_argument("--eval-batch", type=int, default=1024)
    p.add_argument("--final-batch", type=int, default=8192)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", help="write the trained state_dict here")
    p.add_argument("--json", help="write settings, history and final metrics here")
    return train(p.parse_args(argv))


if __name__ == "__main__":
    main()
