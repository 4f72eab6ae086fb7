"""Tabular benchmarks: look a searched architecture up instead of retraining it."""
from jaxnas.benchmarks.nb201 import ArchNotInTableError, NasBench201Table, TableNotFoundError, annotate

__all__ = ["NasBench201Table", "annotate", "TableNotFoundError", "ArchNotInTableError"]
