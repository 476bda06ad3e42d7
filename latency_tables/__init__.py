"""The committed latency tables (``<device>/<runtime>/<name>.csv`` + ``meta.json``).

A package only so that the wheel ships them: ``pip install anyshape`` users without a checkout
find them through :func:`profilers.tables.find_tables_root`.
"""
