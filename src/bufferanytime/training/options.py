"""The option machinery of the training configs: :mod:`bufferanytime.options`, where it is declared for every
command (training, inference), kept importable without torch."""

from bufferanytime.options import (
    FLOAT32_MAX,
    NON_NEGATIVE,
    POSITIVE,
    Check,
    OptionInfo,
    above,
    at_least,
    between,
    check_values,
    coerce,
    default_of,
    flag,
    info,
    limited,
    option,
    parse_res,
    value_types,
)

__all__ = ["FLOAT32_MAX", "NON_NEGATIVE", "POSITIVE", "Check", "OptionInfo", "above", "at_least", "between",
           "check_values", "coerce", "default_of", "flag", "info", "limited", "option", "parse_res", "value_types"]
