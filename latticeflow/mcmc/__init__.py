"""Markov chain Monte Carlo: Metropolis independence sampling with a flow (and HMC)."""

from .independence import independence_acceptance

__all__ = ["independence_acceptance"]
