"""Search spaces: frozen descriptions of D decisions with up to K choices each."""
from jaxnas.spaces.base import Space
from jaxnas.spaces.mlp import TABNAS_WIDTHS, TABNAS_WIDTHS_12, MLPSpace
from jaxnas.spaces.rnn import RNN_OPS, RNNCellSpace
