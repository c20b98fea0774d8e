"""Error analysis of Monte Carlo data: Γ-method, reweighting, jackknife, formatting, and
exports to pyerrors, CSV and NumPy (:mod:`.export`).

References:
    U. Wolff, "Monte Carlo errors with less errors", arXiv:hep-lat/0306017.
"""

from .export import to_pyerrors
from .format import format_value_error
from .gamma import GammaResult, ess, gamma_method, gamma_method_derived, reweighted_mean
from .resampling import bin_data, jackknife

__all__ = [
    "GammaResult", "gamma_method", "gamma_method_derived", "reweighted_mean", "ess",
    "bin_data", "jackknife", "format_value_error", "to_pyerrors",
]
