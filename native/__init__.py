"""Osprey's native core: Cython kernels, each with a pure-Python/NumPy twin.

Every kernel ``native._X`` has a twin ``native.X_py`` and a selector ``native.X``
that honours ``OSPREY_NO_EXTENSIONS=1``.
"""
