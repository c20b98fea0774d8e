"""Normalizing flows: priors, elementwise bijections, networks, coupling layers, flows."""

from .bijections import Affine, ElementwiseBijection, RationalQuadraticSpline
from .circle import CircularSpline, NCPMixture
from .build import build_flow
from .coupling import CheckerboardCoupling
from .flow import Flow
from .priors import NormalPrior, UniformAnglePrior

__all__ = [
    "ElementwiseBijection",
    "Affine",
    "RationalQuadraticSpline",
    "CircularSpline",
    "NCPMixture",
    "NormalPrior",
    "UniformAnglePrior",
    "CheckerboardCoupling",
    "Flow",
    "build_flow",
]
