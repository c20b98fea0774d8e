"""Markov chain Monte Carlo: HMC for every theory, Metropolis independence sampling and
i.i.d. reweighting with a flow, and the driver that writes chains to ensemble files."""

from .flow_samplers import IIDWithWeights, IndependenceMetropolis
from .hmc import HMC, OMELYAN_LAMBDA, initial_field, su_n_generators
from .independence import independence_acceptance, independence_chain

__all__ = ["HMC", "OMELYAN_LAMBDA", "initial_field", "su_n_generators",
           "IndependenceMetropolis", "IIDWithWeights", "independence_chain",
           "independence_acceptance"]
