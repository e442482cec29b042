"""Models, all under one contract (see base.Recommender)."""
from .base import Recommender
from .fresh_slot import FreshSlot
from .interest import InterestModel
from .itemknn import ItemKNN
from .matrix_factorization import ALS, BPR
from .multi_interest import MultiInterestModel
from .popularity import Popularity
from .sasrec import SASRec
from .text_knn import TextNeighbours

__all__ = ["Recommender", "Popularity", "ItemKNN", "ALS", "BPR", "SASRec", "InterestModel", "MultiInterestModel",
           "TextNeighbours", "FreshSlot"]
