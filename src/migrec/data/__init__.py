"""Data layer: one schema, loaders per format, cleaning and chronological splits."""
from .cleaning import CleaningReport, StepReport, clean, deduplicate, k_core, min_history
from .histories import Histories
from .download import ChecksumError, download_movielens, resolve_movielens
from .prepare import PrepareResult, prepare, read_prepared, write_log
from .loaders import (load_amazon_food_kitchen, load_movielens_1m, load_movielens_100k, load_seqrec, load_table,
                      load_unisrec)
from .schema import Dataset, DataError, make_catalogue, make_interactions
from .split import EvalSet, Split, TrainSet, global_time_split, leave_one_out

__all__ = [
    "Dataset", "DataError", "make_catalogue", "make_interactions",
    "Histories", "EvalSet", "Split", "TrainSet", "global_time_split", "leave_one_out",
    "load_movielens_100k", "load_movielens_1m", "load_amazon_food_kitchen", "load_unisrec", "load_table",
    "load_seqrec",
    "CleaningReport", "StepReport", "clean", "deduplicate", "k_core", "min_history",
    "ChecksumError", "download_movielens", "resolve_movielens",
    "prepare", "read_prepared", "write_log", "PrepareResult",
]
