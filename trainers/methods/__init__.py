"""One module per post-training method; each exposes ``run(spec, events) -> dict``.

These modules import torch, transformers, trl and peft: import them only inside the
trainer process (via :meth:`trainers.catalog.Method.load_runner`).
"""
