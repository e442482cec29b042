"""All data-set loaders in one place; each returns a validated `Dataset`.

Every line-based loader takes `on_bad_lines="raise"` (a `DataError` naming file,
line and field) or `"skip"` (bad lines dropped, each listed in
`dataset.meta["skipped_lines"]`, and a logged warning with the count).
"""
from __future__ import annotations

from .amazon import load_amazon_food_kitchen
from .movielens import load_movielens_1m, load_movielens_100k
from .seqrec import load_seqrec
from .tabular import load_table
from .unisrec import load_unisrec

__all__ = ["load_movielens_100k", "load_movielens_1m", "load_amazon_food_kitchen", "load_unisrec", "load_table",
           "load_seqrec"]
