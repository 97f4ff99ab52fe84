"""autopeft's benchmarks: one script each, run from the repository root as ``python -m bench.NAME``.

They import autopeft's public API only (``autopeft.__all__``) and share the helpers of
:mod:`bench.common`; what each one measures and the claim its results back are listed in
``bench/README.md``.
"""
