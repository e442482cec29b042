"""Cross-domain transfer: domain bookkeeping, transfer regimes and user mapping."""
from .emcdr import EMCDRMF
from .mapping import EMCDRMapping, PersonalizedBridge
from .domains import DomainView, TransferTask, item_domains, make_task, restrict, restrict_histories, users_with
from .regimes import ALL, BASELINES, REGIMES, MappedUsers, ModelBank, TransferExperiment, TransferResult, \
    flag_negative_transfer

__all__ = ["DomainView", "TransferTask", "item_domains", "make_task", "restrict", "restrict_histories",
           "users_with", "ALL", "BASELINES", "REGIMES", "MappedUsers", "ModelBank", "TransferExperiment",
           "TransferResult", "flag_negative_transfer", "EMCDRMF", "EMCDRMapping", "PersonalizedBridge"]
