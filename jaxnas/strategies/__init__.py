"""Search strategies (pure functions over pytree states); see base.py for the protocol."""
from jaxnas.strategies.base import Strategy, available, make, register
from jaxnas.strategies import advantage, parsec, random_search, reinforce  # noqa: F401  (policy-gradient family)
from jaxnas.strategies import gradient  # noqa: F401  (darts, darts2, gdas, snas, nasp, proxyless)
from jaxnas.strategies import tabnas as _tabnas  # noqa: F401,E402  (TabNAS + reward-shaping baselines)
from jaxnas.strategies import ma2ml as _ma2ml  # noqa: F401,E402  (MA2ML, MA2ML-Lite: multi-agent AutoML)
from jaxnas.strategies import manas  # noqa: F401,E402  (MANAS, MANAS-LS)
from jaxnas.strategies import shapley as _shapley  # noqa: F401,E402  (Shapley-NAS, needs='batch')
