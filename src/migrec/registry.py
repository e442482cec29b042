"""Explicit registry tables (RecBole style): data-set loaders, models by short name, and the
artifact table that maps a saved model's registry name to its class.

Loading a model never imports a class named in a file: `load_model` looks the manifest's
registry name up in `ARTIFACTS`, so an unknown name is an error, not an import.
"""
from __future__ import annotations

from pathlib import Path

from .data import (Dataset, load_amazon_food_kitchen, load_movielens_1m, load_movielens_100k, load_seqrec,
                   load_table, load_unisrec)
from .drift.adaptation import AdaptiveBlend
from .models import artifact
from .models.base import Recommender
from .models.fresh_slot import FreshSlot
from .models.interest import InterestModel
from .models.itemknn import ItemKNN
from .models.matrix_factorization import ALS, BPR
from .models.multi_interest import MultiInterestModel
from .models.popularity import Popularity
from .models.sasrec import SASRec
from .models.text_knn import TextNeighbours
from .transfer.domains import DomainView
from .transfer.emcdr import EMCDRMF
from .transfer.mix import ValidatedMix
from .transfer.regimes import MappedUsers

LOADERS = {
    "ml-100k": load_movielens_100k,
    "ml-1m": load_movielens_1m,
    "amazon-food-kitchen": load_amazon_food_kitchen,
    "unisrec": load_unisrec,
    "seqrec": load_seqrec,
    "table": load_table,
    "parquet": Dataset.from_parquet,
}

# Short names the command line, the demo and the benchmarks use -> a model with those defaults.
MODELS = {
    "popularity": Popularity,
    "itemknn": ItemKNN,
    "als": ALS,
    "bpr": BPR,
    "sasrec": SASRec,
    "interest-text": lambda **kw: InterestModel(use_id=False, **kw),
    "interest-text+id": lambda **kw: InterestModel(use_id=True, **kw),
    "multi-interest": MultiInterestModel,
    "text-knn": TextNeighbours,
}
SEQUENTIAL = {"sasrec", "interest-text", "interest-text+id", "multi-interest"}
TEXT_MODELS = {"interest-text", "interest-text+id", "multi-interest", "text-knn"}

# Saved artifact's "registry" field -> class. Only these can be loaded.
ARTIFACTS: dict[str, type[Recommender]] = {klass.registry: klass for klass in (
    Popularity, ItemKNN, ALS, BPR, SASRec, InterestModel, MultiInterestModel, TextNeighbours, DomainView,
    MappedUsers, EMCDRMF, AdaptiveBlend, ValidatedMix, FreshSlot)}


def load_model(path, expect: type | None = None, encoder: str | None = None) -> Recommender:
    """Load a model folder written by `Recommender.save`.

    expect: a class the model must be an instance of. encoder: the text encoder model id
    the caller will encode new items with; a model whose vectors came from another encoder
    is refused. Format version, registry name and file digests are checked (ArtifactError).
    """
    manifest = artifact.read_manifest(path)     # the class and encoder first; klass.load reads the files
    klass = ARTIFACTS.get(manifest["registry"])
    if klass is None:
        raise artifact.ArtifactError(f"{Path(path) / artifact.MANIFEST}: field 'registry' is "
                                     f"{manifest['registry']!r}, not a known model ({sorted(ARTIFACTS)})")
    if expect is not None and not issubclass(klass, expect):
        raise artifact.ArtifactError(f"{path} holds a {klass.__name__}, not a {expect.__name__}")
    artifact.check_encoder(manifest.get("encoder"), encoder, "vectors of the encoder asked for")
    return klass.load(path)
