"""AuG-KD training: the engine, the three modules and the baselines."""

from augkd.training.pipeline import DistillResult, compare, distill

__all__ = ["DistillResult", "compare", "distill"]
