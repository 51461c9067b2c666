"""Triton implementations of the augkd kernel ops (one module per op; each imports triton).

Loaded lazily by :mod:`augkd.kernels` the first time the Triton backend is used, so that ``TRITON_INTERPRET``
is read then (Triton reads it when a kernel is decorated) and ``import augkd.kernels`` stays light.

The launchers are plain ``torch.autograd.Function`` classes, not ``torch.library.triton_op`` registrations:
the dispatcher never sends a call that ``torch.compile`` or ``torch.export`` is tracing to these kernels
(it runs the reference, which the compiler fuses itself), so a custom-op registration would never be reached,
and its compile path cannot be tested here (under the interpreter, compiling over a ``triton_op`` fails: a
FakeTensor has no data pointer). Eager calls, the only ones these launchers serve, work either way.
"""
