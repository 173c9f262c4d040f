"""Method and adapter config dataclasses. Standard library only (the web process imports these)."""

from .adapters import AdapterConfig
from .sft import SFTConfig

__all__ = ["AdapterConfig", "SFTConfig"]
