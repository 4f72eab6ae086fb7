"""From-scratch training of discrete networks: what the standalone evaluator, ``jaxnas retrain`` and
the benches call."""
