"""Method and adapter config dataclasses. Standard library only (the web process imports these)."""

from .adapters import AdapterConfig
from .dpo import DPOConfig
from .kto import KTOConfig
from .orpo import ORPOConfig
from .sft import SFTConfig
from .simpo import SimPOConfig

__all__ = ["AdapterConfig", "DPOConfig", "KTOConfig", "ORPOConfig", "SFTConfig", "SimPOConfig"]
