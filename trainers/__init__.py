"""Refinery's framework-free post-training library and its CLI (``python -m trainers``).

Light modules (importable without torch, for the web process): ``schema``, ``configs``,
``registry``, ``spec``, ``events``, ``cancel``, ``stage``, ``data``, ``cli``. Heavy libraries
(torch, transformers, trl, peft, datasets) are imported only inside functions of ``data``,
``demo`` and ``evaluate``, and by ``methods.*``, which only the trainer process loads.
"""
