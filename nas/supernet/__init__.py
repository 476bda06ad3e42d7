"""Supernet construction: calibrate a base model once, then cut any shape out of it instantly.

Depth: :mod:`nas.supernet.depth` (AmoebaLLM's dynamic program over layers, and baselines).
Width: :mod:`nas.supernet.width` (FLAP fluctuation orders, bias compensation, baselines).
Accuracy: :mod:`nas.supernet.evaluate`; data: :mod:`nas.supernet.data`, :mod:`nas.supernet.calibration`.
The artifact: :mod:`nas.supernet.artifact`; building it: :mod:`nas.supernet.build`;
extracting from it: :mod:`nas.supernet.cut`.
"""
