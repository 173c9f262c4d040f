"""How the weights being trained are chosen: the whole model, or a LoRA adapter on top of it."""

import re
from dataclasses import dataclass

from ..schema import param

ADAPTER_TYPES = ("none", "lora")
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class AdapterConfig:
    """Which parameters a stage trains: all of them (none) or a low-rank adapter (LoRA)."""

    type: str = param(
        "lora",
        choices=ADAPTER_TYPES,
        label="Adapter",
        help="'none' trains every weight of the model (full fine-tuning; needs the most memory). "
        "'lora' freezes the model and trains small low-rank matrices next to the chosen layers; "
        "the stage then outputs an adapter instead of a full model.",
    )
    r: int = param(
        8,
        min=1,
        max=1024,
        label="LoRA rank (r)",
        group="lora",
        help="Rank of the LoRA matrices. Higher ranks can learn more but train more parameters; 8-64 is typical.",
    )
    alpha: int = param(
        16,
        min=1,
        max=4096,
        label="LoRA alpha",
        group="lora",
        help="Scaling of the LoRA update (the update is multiplied by alpha / r, or alpha / sqrt(r) with rsLoRA). "
        "A common choice is twice the rank.",
    )
    dropout: float = param(
        0.0,
        min=0,
        max=1,
        max_exclusive=True,
        label="LoRA dropout",
        group="lora",
        help="Dropout applied to the input of the LoRA matrices during training; 0 to 0.1 is typical.",
    )
    target_modules: str = param(
        "all-linear",
        label="Target modules",
        group="lora",
        help="Layers that get an adapter: 'all-linear' (every linear layer except the output head), "
        "or a comma-separated list of module names such as 'q_proj,v_proj'.",
    )
    use_rslora: bool = param(
        False,
        label="Rank-stabilized LoRA",
        group="lora",
        help="Scale the update by alpha / sqrt(r) instead of alpha / r, which keeps high ranks stable.",
    )

    def check(self) -> dict[str, str]:
        if self.type == "lora":
            modules = self.target_module_list()
            if not modules:
                return {"target_modules": "give 'all-linear' or at least one module name"}
            bad = [m for m in modules if m != "all-linear" and not _MODULE_NAME.match(m)]
            if bad:
                return {"target_modules": f"not a module name: {bad[0]!r}"}
            if "all-linear" in modules and len(modules) > 1:
                return {"target_modules": "'all-linear' cannot be combined with module names"}
        return {}

    def target_module_list(self) -> list[str]:
        """The comma list split into names (empty entries dropped)."""
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]
