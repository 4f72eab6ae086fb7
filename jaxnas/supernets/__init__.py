"""Supernets: pure Flax modules called as ``apply({'params': p}, x, weights, mode=...)``."""
from jaxnas.supernets.cells import Cell, DartsNet, MixedEdge, NasBench201Net
from jaxnas.supernets.init import init_params, init_variables
from jaxnas.supernets.mlp import MLP, MLPSupernet, child_params
from jaxnas.supernets.rnn import RNNLanguageModel, init_rnn_params
