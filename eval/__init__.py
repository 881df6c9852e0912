"""Batch evaluation of paper-rag: datasets, metrics, runs, reports and benchmarks."""
