"""The standard VPR benchmarks: their catalog and the formats they ship in."""

from pipeline.data.benchmarks.catalog import BENCHMARKS, Benchmark, benchmark, benchmark_keys, benchmark_metric
from pipeline.data.benchmarks.formats import find_split, read_split, split_format

__all__ = ["BENCHMARKS", "Benchmark", "benchmark", "benchmark_keys", "benchmark_metric", "find_split", "read_split", "split_format"]
