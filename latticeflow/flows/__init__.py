"""Normalizing flows: priors, elementwise bijections, networks, coupling layers, flows."""

from .bijections import Affine, CircularSpline, ElementwiseBijection, NCPMixture, RationalQuadraticSpline
from .priors import NormalPrior, UniformAnglePrior

__all__ = [
    "ElementwiseBijection",
    "Affine",
    "RationalQuadraticSpline",
    "CircularSpline",
    "NCPMixture",
    "NormalPrior",
    "UniformAnglePrior",
]
