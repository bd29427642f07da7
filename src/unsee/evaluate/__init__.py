"""Evaluation: judges (images -> labels), metrics, prompt sets, and the scorecard."""

from unsee.evaluate.scorecard import EvalResult, EvalSettings, evaluate, evaluate_models

__all__ = ["EvalResult", "EvalSettings", "evaluate", "evaluate_models"]
