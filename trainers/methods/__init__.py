"""One module per post-training method; each exposes ``run(spec, events) -> dict``.

These modules import torch, transformers, trl and peft: import them only inside the
trainer process (via :meth:`trainers.registry.Method.load_runner`).
"""
