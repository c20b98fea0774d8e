"""Summaries of ensemble files: every observable's mean, error and τ_int, acceptance, ESS.

This is what ``latticeflow analyze`` prints.  Conventions:

- Chains are replicas of one Markov process (Γ-method over all of them at once).
- ``flow-iid`` files are reweighted: ⟨O⟩ = Σ w O / Σ w with w = exp(log_weight), the
  error from the Γ-method of that ratio (τ_int ≈ ½ for independent samples).
- ESS = (Σw)²/(N Σw²) of the *proposals* (flow samplers): the flow's quality, independent
  of the accept/reject history.  ``null`` for HMC.
- ``too_short``: the chains are shorter than 20 τ_int (or no Γ-method window was found
  before half a chain), so τ_int and the error are likely underestimated and a deviation
  from an exact value overstated; ``analyze`` and ``compare`` mark such rows with ``*``.
- Derived observables that the theory declares (``Theory.derived_observables``, e.g. φ⁴'s
  ``chi2_connected`` = (⟨M²⟩ − ⟨M⟩²)/V) are added, with errors propagated by the Γ-method.
"""

from __future__ import annotations

import warnings

import numpy as np

from .gamma import (GammaResult, ShortChainWarning, ess, gamma_method, gamma_method_derived,
                    reweighted_mean)

__all__ = ["summarize", "observable_results", "acceptance_and_ess", "result_dict",
           "SHORT_CHAINS_NOTE"]

#: the footnote of a table with ``too_short`` rows (``analyze``, ``compare``)
SHORT_CHAINS_NOTE = ("* chains shorter than 20 tau_int: tau_int and the error are likely "
                     "underestimated, a deviation overstated; run longer")


def _replicas(a: np.ndarray) -> np.ndarray:
    """(n_rows, C) → (C, n_rows): chains as replicas."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64).T)


def _safe(fn, *args) -> GammaResult | None:
    """``fn(*args)``, None where the data are too few; a too-short chain is reported by the
    result's ``too_short`` flag, not by a warning."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShortChainWarning)
            return fn(*args)
    except ValueError:
        return None


def observable_results(ens, derived: dict | None = None) -> dict[str, GammaResult | None]:
    """Γ-method result for every stored observable, and for the theory's ``derived``
    observables (``Theory.derived_observables()``); None where the data are too short."""
    obs = ens.observables
    iid = ens.reweighted
    log_w = _replicas(ens.log_weight) if iid else None
    out: dict[str, GammaResult | None] = {}
    for name, values in obs.items():
        data = _replicas(values)
        out[name] = _safe(reweighted_mean, data, log_w) if iid else _safe(gamma_method, data)
    if iid:
        return out
    for name, d in (derived or {}).items():
        if all(k in obs for k in d.requires):
            series = [_replicas(s) for s in d.series(obs)]
            out[name] = _safe(gamma_method_derived, d.value, series)
    return out



def result_dict(r: GammaResult | None) -> dict:
    """One observable of the ``analyze --json`` object: mean, error, τ_int and its error,
    ``too_short``, N_eff (all None when there were too few data)."""
    if r is None:
        return {"mean": None, "error": None, "tau_int": None, "tau_int_error": None,
                "too_short": None}
    return r.as_dict() | {"n_eff": r.n_eff}


def acceptance_and_ess(ens) -> tuple[float | None, float | None]:
    """Acceptance rate, and the ESS of the flow's proposals (None for HMC)."""
    accepted = ens.mcmc.get("flow_acceptance")  # mixed: the flow's, not "some proposal accepted"
    accepted = ens.accepted if accepted is None else accepted
    acceptance = float(np.mean(accepted)) if accepted is not None and accepted.size else None
    proposals = ens.mcmc.get("proposal_log_weight")
    if proposals is None and ens.reweighted:
        proposals = ens.log_weight
    ess_value = float(ess(proposals)) if proposals is not None and proposals.size else None
    return acceptance, ess_value


#: why ΔF is not given for transports from a chain of starts (``extra["jarzynski"]["starts"]``)
CHAIN_STARTS_NOTE = ("not estimated: the transports start from a Markov chain of c = 0 configurations tied to the "
                     "accepted paths, not from independent draws of e^{-S_0}, so -log<exp(-W)> over them is not "
                     "Jarzynski's estimate")


def free_energy(ens) -> dict | None:
    """ΔF = −log⟨e^{−W}⟩ over the proposals of a file of non-equilibrium transports (one that
    records ``extra["jarzynski"]``; ``mcmc/proposal_log_weight`` = −W), with its Γ-method
    error and the exact value the file records (None where unknown); None for other files.
    Only for transports from independent exact starts (``starts = "exact"``; files written
    before the key: those that record an exact ΔF, i.e. pure U(1)): with a Markov chain of
    starts (the Schwinger model) the mean is None and ``why`` says why."""
    record, log_w = ens.extra.get("jarzynski"), ens.mcmc.get("proposal_log_weight")
    if not isinstance(record, dict) or log_w is None or log_w.size < 2 or not np.isfinite(log_w).any():
        return None
    starts = record.get("starts", "exact" if record.get("delta_f_exact") is not None else "chain")
    if starts != "exact":
        return {"mean": None, "error": None, "exact": None, "why": CHAIN_STARTS_NOTE}
    shift = float(np.max(log_w))
    w = _replicas(np.exp(log_w - shift))
    r = _safe(gamma_method_derived, lambda m: -(shift + np.log(m)), [w], 1.5, [-1.0 / w.mean()])
    return result_dict(r) | {"exact": record.get("delta_f_exact")}


def summarize(ens, exact: dict[str, float] | None = None, derived: dict | None = None) -> dict:
    """The ``analyze --json`` object for one open :class:`latticeflow.ensemble.Ensemble`."""
    acceptance, ess_value = acceptance_and_ess(ens)
    results = observable_results(ens, derived)
    summary = {
        "path": str(ens.path),
        "sampler": ens.sampler,
        "theory": ens.theory,
        "n": int(ens.n),
        "n_chains": int(ens.n_chains),
        "acceptance": acceptance,
        "ess": ess_value,
        "generation_seconds": float(ens.generation_seconds),
        "observables": {name: result_dict(r) for name, r in results.items()},
    }
    delta_h = ens.delta_h
    if delta_h is not None and delta_h.size >= 10:
        r = _safe(gamma_method, _replicas(np.exp(-delta_h)))
        summary["exp_minus_delta_h"] = result_dict(r)
    delta_f = free_energy(ens)
    if delta_f is not None:
        summary["delta_f"] = delta_f
    if exact:
        summary["exact"] = {k: v for k, v in exact.items() if k in results}
    return summary
