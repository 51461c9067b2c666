"""Triton implementations of the augkd kernel ops (one module per op; each imports triton).

Loaded lazily by :mod:`augkd.kernels` the first time the Triton backend is used, so that ``TRITON_INTERPRET``
is read then (Triton reads it when a kernel is decorated) and ``import augkd.kernels`` stays light.
"""
