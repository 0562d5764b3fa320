"""Supervised audio-visual tasks on the shared frozen encoders: an *encoder mode* turns a batch into
per-segment visual and audio features f_v (B, T, D_v) and f_a (B, T, D_a) -- the frozen towers'
embeddings (``frozen``), or the towers with DG-SCT's cross-modal modules (``dg-sct``, the DG-SCT
method's own injection code) or LAVisH-style latent-token adapters (``lavish``) trained inside them
(``encoder_modes.py``, ``lavish.py``) -- and a task head trained on those features is scored on the
task's test split (``run.py``, ``evaluate.py``, ``commands.py``)."""
