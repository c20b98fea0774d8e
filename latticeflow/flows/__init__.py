"""Normalizing flows: priors, elementwise bijections, networks, coupling layers, flows.

Every module of this package is imported here; those that define a theory's flows
register them (:func:`~latticeflow.flows.registry.register_architecture`), so adding a
theory's flows means adding one module and nothing else.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from .bijections import Affine, ElementwiseBijection, RationalQuadraticSpline
from .circle import CircularSpline, NCPMixture
from .coupling import CheckerboardCoupling
from .flow import Flow
from .priors import NormalPrior, UniformAnglePrior
from .registry import ARCHITECTURES, FlowConfig, architecture, build_flow

for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")

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
    "FlowConfig",
    "ARCHITECTURES",
    "architecture",
    "build_flow",
]
