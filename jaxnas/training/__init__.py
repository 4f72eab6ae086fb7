"""From-scratch training of discrete networks: the one checkpointed loop (``loop``) that image
networks (``image_runs``) and language models (``language_model``) train with, and TabNAS MLP members
and MA2ML pipelines as vmapped lanes of one program (``standalone``). The standalone evaluator,
``jaxnas retrain`` (``jaxnas.protocols``) and the benches call it."""
