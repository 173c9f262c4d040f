"""Refinery's framework-free post-training library and its CLI (``python -m trainers``).

Light modules (importable without torch): ``schema``, ``configs``, ``catalog`` (the methods), ``dataset_kinds``,
``metrics``, ``rewards`` (the facts the web side reads; an import-linter contract in pyproject.toml allows it
no other trainers module), and ``stage_spec``, ``events``, ``cancel``, ``stage``, ``data``, ``cli``. Heavy libraries
(torch, transformers, trl, peft, datasets) are imported only inside functions of ``data``,
``demo`` and ``measures``, and by ``methods.*``, which only the trainer process loads.
"""
