"""Search strategies (pure functions over pytree states); see base.py for the protocol."""
from jaxnas.strategies import (  # noqa: F401  (policy-gradient family)
    advantage,
    gradient,  # noqa: F401  (darts, darts2, gdas, snas, nasp, proxyless)
    manas,  # noqa: F401,E402  (MANAS, MANAS-LS)
    parsec,
    random_search,
    reinforce,
)
from jaxnas.strategies import ma2ml as _ma2ml  # noqa: F401,E402  (MA2ML, MA2ML-Lite: multi-agent AutoML)
from jaxnas.strategies import shapley as _shapley  # noqa: F401,E402  (Shapley-NAS, needs='batch')
from jaxnas.strategies import tabnas as _tabnas  # noqa: F401,E402  (TabNAS + reward-shaping baselines)
from jaxnas.strategies.base import Strategy, available, defaults_used, factory, make, options, register
