"""Tasks: a supernet coupled with its loss and reward (classification, language model). Loss and
scoring only; the evaluators that train them live in ``jaxnas.evaluators``."""
from jaxnas.tasks.classification import REWARDS, ClassificationTask, classification_loss

__all__ = ["REWARDS", "ClassificationTask", "classification_loss"]
