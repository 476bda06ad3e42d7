"""anyshape: hardware-aware neural architecture search over any-shape LLM supernets.

The library behind the ``anyshape`` command. Nothing heavy is imported here, so that the
CLI starts fast; import the submodules you need (``nas.extract``, ``nas.shape``, ...).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
