"""Method and adapter config dataclasses. Standard library only (the web process imports these)."""

from .adapters import AdapterConfig
from .distill import DistillConfig
from .dpo import DPOConfig
from .grpo import GRPOConfig
from .kto import KTOConfig
from .orpo import ORPOConfig
from .reward import RewardConfig
from .sft import SFTConfig
from .simpo import SimPOConfig

__all__ = [
    "AdapterConfig",
    "DistillConfig",
    "DPOConfig",
    "GRPOConfig",
    "KTOConfig",
    "ORPOConfig",
    "RewardConfig",
    "SFTConfig",
    "SimPOConfig",
]
