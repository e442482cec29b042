"""Evaluation: full-ranking metrics, the evaluator, experiments, memory/time measurement, plots."""
from .evaluator import EvalResult, evaluate
from .experiment import Experiment, ExperimentResult, machine_description
from .memory import PeakMemory
from .metrics import accuracy_metrics, beyond_accuracy_metrics, target_ranks, top_k

__all__ = ["EvalResult", "evaluate", "Experiment", "ExperimentResult", "machine_description", "PeakMemory",
           "accuracy_metrics", "beyond_accuracy_metrics", "target_ranks", "top_k"]
