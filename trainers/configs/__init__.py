"""Method and adapter config dataclasses. Standard library only (the web process imports these)."""

from .adapters import AdapterConfig
from .distill import DistillConfig
from .dpo import DPOConfig
from .evaluate import EvaluateConfig
from .export import ExportConfig
from .gate import GateConfig
from .grpo import GRPOConfig
from .kto import KTOConfig
from .merge import MergeConfig
from .orpo import ORPOConfig
from .reward import RewardConfig
from .sft import SFTConfig
from .simpo import SimPOConfig

__all__ = [
    "AdapterConfig",
    "DistillConfig",
    "DPOConfig",
    "EvaluateConfig",
    "ExportConfig",
    "GateConfig",
    "GRPOConfig",
    "KTOConfig",
    "MergeConfig",
    "ORPOConfig",
    "RewardConfig",
    "SFTConfig",
    "SimPOConfig",
]
