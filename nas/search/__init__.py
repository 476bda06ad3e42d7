"""Hardware-aware search over supernet shapes with Optuna, and export of the Pareto front."""

from nas.search.export import ExportResult, export_study
from nas.search.problem import AccuracyEvaluator, LatencyPredictor, SearchProblem, SearchSpace, memory_mb
from nas.search.run import SearchConfig, SearchResult, run_search
from nas.search.storage import pareto_trials

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
