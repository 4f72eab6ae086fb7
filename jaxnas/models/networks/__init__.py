"""Discrete networks for training a found architecture from scratch (the retrain step)."""
from jaxnas.models.networks.darts_eval import DartsEvalNet, cells_from_arch, cells_from_genotype

__all__ = ["DartsEvalNet", "cells_from_arch", "cells_from_genotype"]
