"""The ``bufferanytime`` command line: one module per sub-command over the library's entry points (inference,
training, evaluation, synthetic data, flow), with argument types, one-line errors and signal handling in ``main``."""
