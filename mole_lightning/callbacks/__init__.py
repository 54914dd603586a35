"""Lightning callbacks every run may use (checkpointing, progress lines, throughput); a
method's own callbacks live in its folder (``methods/<name>/callbacks.py``) and come
from its registry entry (``mole_lightning.methods.method_callbacks``)."""
