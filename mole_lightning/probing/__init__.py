"""Layer-wise linear probing (``scripts/probe.py``): linguistic properties of sentences
(``properties``), mean-pooled word representations of every layer (``features``, cached
per model and layer), the word graphs of the probe sentences for MoLE's graph experts
(``graphs``), logistic-regression probes with a majority baseline (``probes``) and the
layer × property tables and heatmaps (``report``)."""
