"""Cross-domain transfer: domain bookkeeping, transfer regimes and user mapping."""
from .emcdr import EMCDRMF
from .mapping import EMCDRMapping, PersonalizedBridge
from .domains import DomainView, TransferTask, item_domains, make_task, restrict, restrict_histories, users_with
from .mix import ValidatedMix
from .regimes import ALL, BASELINES, REGIMES, MappedUsers, ModelBank, TransferExperiment, TransferResult, \
    flag_negative_transfer, paired_difference

__all__ = ["DomainView", "TransferTask", "item_domains", "make_task", "restrict", "restrict_histories",
           "users_with", "ALL", "BASELINES", "REGIMES", "MappedUsers", "ModelBank", "TransferExperiment",
           "TransferResult", "flag_negative_transfer", "ValidatedMix", "paired_difference", "EMCDRMF", "EMCDRMapping", "PersonalizedBridge"]
