"""Physicists' notation for a value with its error: ``0.69777(45)``.

The error is rounded to ``digits`` significant figures and the value to the same decimal
place; the digits in brackets are the error in units of the value's last digit.  An error
of one or more written in the value's own notation when the value has decimals:
``12.3(1.4)``.  Very small or very large numbers get a common exponent:
``1.234(56)e-08``.

Example:
    >>> format_value_error(0.697771, 0.000452)
    '0.69777(45)'
    >>> format_value_error(12.34, 1.43)
    '12.3(1.4)'
"""

import math

__all__ = ["format_value_error"]


def format_value_error(mean: float, error: float, digits: int = 2) -> str:
    """``mean`` and ``error`` as ``"0.69777(45)"``.

    Arguments:
        mean: the central value (any sign; NaN or inf is printed as such).
        error: its standard error, ≥ 0 (0 gives ``"0.5(0)"``, NaN gives ``"0.5(nan)"``).
        digits: significant figures kept in the error (≥ 1).
    """
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    mean, error = float(mean), float(error)
    if error < 0:
        raise ValueError(f"error must be non-negative, got {error}")
    if not math.isfinite(mean):
        return str(mean)
    if not math.isfinite(error):
        return f"{mean:.6g}({error})"
    if error == 0:
        return f"{mean:.12g}(0)"

    # A common exponent keeps tiny or huge numbers readable.
    scale = max(abs(mean), error)
    exponent = math.floor(math.log10(scale))
    if exponent < -4 or exponent >= 6:
        factor = 10.0 ** exponent
        return f"{format_value_error(mean / factor, error / factor, digits)}e{exponent:+03d}"

    decimals = digits - 1 - math.floor(math.log10(error))
    # Rounding can carry the error into the next decade (0.0996 -> 0.10): redo once.
    rounded = round(error, decimals)
    decimals = digits - 1 - math.floor(math.log10(rounded))
    rounded = round(error, decimals)

    value = f"{round(mean, decimals):.{max(decimals, 0)}f}"
    if decimals > 0 and rounded < 1:
        bracket = f"{round(rounded * 10 ** decimals):d}"
    else:
        bracket = f"{rounded:.{max(decimals, 0)}f}"
    return f"{value}({bracket})"
