"""What XLA reports of a compiled program."""


def flops(compiled) -> float:
    """``compiled.cost_analysis()``'s FLOPs (a dict, or a one-element list of it on some versions)."""
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
