"""Validation of estimator parameters (scikit-learn style, strict).

Every estimator checks its constructor arguments with :func:`check_param`, which
raises a :class:`~petuum_mpi.errors.ConfigError` naming the parameter.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError


def check_param(name, value, kind, lo=None, hi=None, lo_open=False, hi_open=False, choices=None, none_ok=False):
    """Return ``value`` converted to ``kind`` (bool, str, int or float) if it is
    valid, else raise ConfigError naming ``name``. ``lo``/``hi`` bound numbers
    (``*_open`` excludes the bound), ``choices`` lists allowed strings,
    ``none_ok`` lets None through."""
    if value is None and none_ok:
        return None
    if kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"{name}: expected a boolean, got {value!r}")
        return bool(value)
    if kind is str:
        if not isinstance(value, str) or (choices and value not in choices):
            raise ConfigError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        value = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        value = float(value)
        if not np.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ConfigError(f"{name}: must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ConfigError(f"{name}: must be {'<' if hi_open else '<='} {hi}, got {value!r}")
    return value
