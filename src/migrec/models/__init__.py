"""Models, all under one contract (see base.Recommender)."""
from .base import Recommender
