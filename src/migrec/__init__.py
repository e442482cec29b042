"""migrec: recommendations that migrate user interests with pretrained language models."""
__version__ = "0.2.0"
