"""Markov chain Monte Carlo: Hybrid Monte Carlo for every theory."""

from .hmc import HMC, OMELYAN_LAMBDA, initial_field, su_n_generators

__all__ = ["HMC", "OMELYAN_LAMBDA", "initial_field", "su_n_generators"]
