"""migrec: recommendations that migrate user interests with pretrained language models."""
__version__ = "0.2.0"

from . import hardware  # noqa: E402,F401  (sets oneDNN's kernel cache size before any training)
