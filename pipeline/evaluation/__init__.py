"""Evaluation: descriptors, exact kNN (faiss on CPU, torch on GPU), Recall@N, per-query results."""

from pipeline.evaluation.descriptors import extract_descriptors
from pipeline.evaluation.knn import knn_search, resolve_backend
from pipeline.evaluation.recall import per_query_hits, recall_at_n
from pipeline.evaluation.results import EvaluationResult, evaluate

__all__ = [
    "EvaluationResult",
    "evaluate",
    "extract_descriptors",
    "knn_search",
    "per_query_hits",
    "recall_at_n",
    "resolve_backend",
]
