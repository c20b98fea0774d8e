"""Tests of latticeflow.analysis.format (physicists' value(error) notation)."""

import math

import pytest

from latticeflow.analysis import format_value_error


@pytest.mark.parametrize("mean, error, digits, expected", [
    (0.697771, 0.000452, 2, "0.69777(45)"),
    (0.697771, 0.000452, 1, "0.6978(5)"),
    (-0.697771, 0.000452, 2, "-0.69777(45)"),
    (1.2345, 0.0996, 2, "1.23(10)"),        # the error rounds up into the next decade
    (12.34, 1.43, 2, "12.3(1.4)"),
    (12.34, 1.43, 1, "12(1)"),
    (1234.5, 14.2, 2, "1234(14)"),
    (12345.0, 142.0, 2, "12340(140)"),
    (0.5, 0.0, 2, "0.5(0)"),
    (3.0, 0.0, 2, "3(0)"),
    (1.234e-8, 5.6e-10, 2, "1.234(56)e-08"),
    (6.02e23, 3.1e21, 2, "6.020(31)e+23"),
    (0.0, 0.0123, 2, "0.000(12)"),
])
def test_examples(mean, error, digits, expected):
    assert format_value_error(mean, error, digits) == expected


def test_nan_and_inf():
    assert format_value_error(math.nan, 0.1) == "nan"
    assert format_value_error(1.5, math.nan) == "1.5(nan)"
    assert format_value_error(-math.inf, 1.0) == "-inf"


def test_bad_arguments():
    with pytest.raises(ValueError):
        format_value_error(1.0, -0.1)
    with pytest.raises(ValueError):
        format_value_error(1.0, 0.1, digits=0)
