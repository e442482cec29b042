"""Data layer: one schema, loaders per format, cleaning and chronological splits."""
from .schema import Dataset, DataError, make_catalogue, make_interactions
from .split import EvalSet, Split, TrainSet, global_time_split, leave_one_out
