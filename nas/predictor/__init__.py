"""Learned latency predictors fit on latency tables, with a portable save format."""

from nas.predictor.evaluate import evaluate_predictor, metrics
from nas.predictor.lut import BlockLUT
from nas.predictor.model import FitRecipe, LatencyPredictor, fit_predictor, load_predictor

__all__ = ["BlockLUT", "FitRecipe", "LatencyPredictor", "evaluate_predictor", "fit_predictor", "load_predictor", "metrics"]
