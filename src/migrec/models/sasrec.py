"""SASRec (Kang & McAuley, 2018): the causal transformer over a free item-ID embedding."""
from __future__ import annotations

from torch import nn

from .sequential import SequentialRecommender
from .transformer import IDTable


class SASRec(SequentialRecommender):
    name = "sasrec"
    registry = "sasrec"

    def _build_items(self) -> nn.Module:
        return IDTable(len(self.item_ids_), self.hidden)

    def _grow_items(self, item_ids, vectors, domains, encoder) -> None:
        # ID-only: new items get freshly initialised rows; they learn from their first events.
        self.net_["item_table"].add_items(len(item_ids))
