"""How the weights being trained are chosen: the whole model, a PEFT adapter, or a selected subset.

Standard library only: the web process builds the adapter form from :class:`AdapterConfig`.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields

from ..schema import param

__all__ = [
    "ADAPTER_TYPES",
    "ADAPTER_FIELD_TYPES",
    "PEFT_TYPES",
    "FULL_MODEL_TYPES",
    "MERGEABLE_TYPES",
    "AdapterConfig",
    "adapter_model_errors",
]

ADAPTER_TYPES = ("none", "lora", "dora", "qlora", "ia3", "prompt_tuning", "layernorm", "bitfit", "freeze")
# Types trained through PEFT: the stage outputs an adapter (PEFT files) instead of a full model.
PEFT_TYPES = ("lora", "dora", "qlora", "ia3", "prompt_tuning", "layernorm")
# The others train the model's own weights: the stage outputs a whole model.
FULL_MODEL_TYPES = tuple(t for t in ADAPTER_TYPES if t not in PEFT_TYPES)
# PEFT adapters whose weights can be folded into the base model (prompt tuning adds virtual tokens instead).
MERGEABLE_TYPES = ("lora", "dora", "qlora", "ia3", "layernorm")
_LORA_FAMILY = ("lora", "dora", "qlora")
# Which adapter types read each field (type applies to all). Fields not listed for a type must keep their default.
ADAPTER_FIELD_TYPES = {
    "r": _LORA_FAMILY,
    "alpha": _LORA_FAMILY,
    "dropout": _LORA_FAMILY,
    "target_modules": (*_LORA_FAMILY, "ia3"),
    "use_rslora": _LORA_FAMILY,
    "num_virtual_tokens": ("prompt_tuning",),
    "freeze_layers": ("freeze",),
}
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _applies(name: str) -> str:
    return "Used by: " + ", ".join(ADAPTER_FIELD_TYPES[name]) + "."


@dataclass(frozen=True)
class AdapterConfig:
    """Which parameters a stage trains: all of them, a PEFT adapter, or a selected subset of the model."""

    type: str = param(
        "lora",
        choices=ADAPTER_TYPES,
        label="Adapter",
        help="'none': full fine-tuning, every weight trains (most memory). "
        "'lora': small low-rank matrices beside the chosen layers. "
        "'dora': LoRA that also learns each weight's magnitude (slower, often closer to full fine-tuning). "
        "'qlora': LoRA on the model quantized to 4 bits, for big models on small GPUs; needs a CUDA GPU and "
        "bitsandbytes on the worker, or the stage fails at start. "
        "'ia3': learned scaling vectors (fewest parameters). "
        "'prompt_tuning': learned virtual tokens before every input; cannot be merged, so no later training "
        "stage can start from it. "
        "'layernorm': only the normalization weights. "
        "'bitfit': only the biases (refused for models without any, such as Llama or Mistral). "
        "'freeze': the embeddings and the first freeze_layers layers stay frozen, the rest trains. "
        "none, bitfit and freeze output a full model, the others an adapter.",
    )
    r: int = param(
        8,
        min=1,
        max=1024,
        label="LoRA rank (r)",
        group="lora",
        help="Rank of the LoRA matrices. Higher ranks can learn more but train more parameters; 8-64 is typical. "
        + _applies("r"),
    )
    alpha: int = param(
        16,
        min=1,
        max=4096,
        label="LoRA alpha",
        group="lora",
        help="Scaling of the LoRA update (the update is multiplied by alpha / r, or alpha / sqrt(r) with rsLoRA). "
        "A common choice is twice the rank. " + _applies("alpha"),
    )
    dropout: float = param(
        0.0,
        min=0,
        max=1,
        max_exclusive=True,
        label="LoRA dropout",
        group="lora",
        help="Dropout applied to the input of the LoRA matrices during training; 0 to 0.1 is typical. "
        + _applies("dropout"),
    )
    target_modules: str = param(
        "all-linear",
        label="Target modules",
        group="lora",
        help="Layers that get an adapter: 'all-linear' (every linear layer except the output head), "
        "or a comma-separated list of module names such as 'q_proj,v_proj'. With ia3, the feed-forward "
        "down projections of known architectures scale their input, as in the IA3 paper. " + _applies("target_modules"),
    )
    use_rslora: bool = param(
        False,
        label="Rank-stabilized LoRA",
        group="lora",
        help="Scale the update by alpha / sqrt(r) instead of alpha / r, which keeps high ranks stable. "
        + _applies("use_rslora"),
    )
    num_virtual_tokens: int = param(
        20,
        min=1,
        max=1024,
        label="Virtual tokens",
        group="prompt_tuning",
        help="How many learned token embeddings are put before every input (they use up context length). "
        "10-100 is typical. " + _applies("num_virtual_tokens"),
    )
    freeze_layers: int = param(
        0,
        min=0,
        max=10_000,
        label="Frozen layers",
        group="freeze",
        help="How many transformer layers, counted from the input, stay frozen together with the embeddings; "
        "the later layers, the final norm and the output head (unless it shares the embedding weights) train. "
        "0 freezes only the embeddings. "
        "Must not exceed the model's number of layers. " + _applies("freeze_layers"),
    )

    def check(self) -> dict[str, str]:
        errors = {}
        defaults = {f.name: f.default for f in fields(self)}
        for name, types in ADAPTER_FIELD_TYPES.items():
            value = getattr(self, name)
            if self.type not in types and value != defaults[name]:
                errors[name] = (
                    f"{self.type} does not use this field (only {', '.join(types)} do); "
                    f"leave it at its default ({defaults[name]!r})"
                )
        if self.type in ADAPTER_FIELD_TYPES["target_modules"]:
            modules = self.target_module_list()
            if not modules:
                errors["target_modules"] = "give 'all-linear' or at least one module name"
            elif bad := [m for m in modules if m != "all-linear" and not _MODULE_NAME.match(m)]:
                errors["target_modules"] = f"not a module name: {bad[0]!r}"
            elif "all-linear" in modules and len(modules) > 1:
                errors["target_modules"] = "'all-linear' cannot be combined with module names"
        return errors

    def target_module_list(self) -> list[str]:
        """The comma list split into names (empty entries dropped)."""
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]

    @property
    def is_peft(self) -> bool:
        """Trained through PEFT: the stage outputs an adapter rather than a full model."""
        return self.type in PEFT_TYPES


def adapter_model_errors(
    adapter: "AdapterConfig | None", *, parameter_names: Iterable[str], num_layers: int | None
) -> dict[str, str]:
    """What rules this adapter out for one model, from the model's parameter names and layer count alone.

    Returns ``{field: message}`` (messages do not repeat the field name). The trainer checks this
    once the model is loaded; the web side can call it earlier with the tensor names from a
    local model's safetensors headers and ``num_hidden_layers`` from its config.json, which
    needs no heavy library.
    """
    if adapter is None:
        return {}
    errors = {}
    if adapter.type == "bitfit" and not any(name.endswith(".bias") for name in parameter_names):
        errors["type"] = (
            "bitfit trains only bias parameters and this model has 0 bias parameters; "
            "choose another adapter type (layernorm, lora, ...)"
        )
    if adapter.type == "freeze" and num_layers is not None and adapter.freeze_layers > num_layers:
        errors["freeze_layers"] = (
            f"freeze_layers is {adapter.freeze_layers} but the model has only {num_layers} transformer layers"
        )
    return errors
