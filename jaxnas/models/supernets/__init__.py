"""Supernets: pure Flax modules called as ``apply({'params': p}, x, weights, mode=...)``."""
from jaxnas.models.supernets.cells import Cell, DartsNet, MixedEdge, NasBench201Net
from jaxnas.models.supernets.init import init_params, init_variables
from jaxnas.models.supernets.mlp import MLP, MLPSupernet, child_params
from jaxnas.models.supernets.rnn import RNNLanguageModel, init_rnn_params
