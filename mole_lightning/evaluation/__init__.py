"""Evaluating a trained checkpoint beyond its own dev set (``scripts/evaluate.py``).

``checkpoint`` loads a run back, ``data`` turns any list of examples into batches through
the training data path (tokenized cache, parse cache for graph methods), ``predict`` runs
the model and scores with the task's torchmetrics, and one module per suite (``advglue``,
``perturb``, ``transfer``) says what it evaluates; ``suites`` ties them to the
``eval_<suite>.json`` / ``.csv`` files ``report`` writes into the run directory.
"""
