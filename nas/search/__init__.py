"""Hardware-aware search over supernet shapes with Optuna, and export of the Pareto front."""

from nas.search.export import ExportResult, export_study, pareto_trials
from nas.search.problem import AccuracyEvaluator, LatencyPredictor, SearchProblem, SearchSpace, memory_mb
from nas.search.run import SearchConfig, SearchResult, run_search

__all__ = [
    "AccuracyEvaluator",
    "ExportResult",
    "LatencyPredictor",
    "SearchConfig",
    "SearchProblem",
    "SearchResult",
    "SearchSpace",
    "export_study",
    "memory_mb",
    "pareto_trials",
    "run_search",
]
