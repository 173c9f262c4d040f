"""Applying the stage's adapter choice to a loaded model, the same way for every method.

:func:`apply_adapter` is the one entry point. PEFT types (lora, dora, qlora, ia3,
prompt_tuning, layernorm) come back as an untouched model plus a ``peft_config`` that the
TRL trainer wraps itself (TRL then handles gradient checkpointing, QLoRA dtypes and the DPO
reference model). Selective types (bitfit, freeze) come back as the model with
``requires_grad`` set and no ``peft_config``; the stage then outputs a full model.
"""

import importlib.util
import os
import re
from typing import Any

import torch
from torch import nn

from ..configs.adapters import AdapterConfig, adapter_model_errors

__all__ = [
    "TASKS",
    "AdapterError",
    "apply_adapter",
    "lora_config",
    "bitsandbytes_unavailable_reason",
    "qlora_unavailable_reason",
    "require_adapter_runtime",
    "quantization_config",
    "norm_module_names",
    "decoder_layers",
]

# Model heads a stage can train: a causal language model, or a sequence classifier (reward models).
TASKS = {"causal_lm": "CAUSAL_LM", "seq_cls": "SEQ_CLS"}


class AdapterError(ValueError):
    """The chosen adapter cannot be used with this model or on this worker."""


def bitsandbytes_unavailable_reason(what: str) -> str | None:
    """Why ``what`` (qlora, an export's bnb_4bit, ...) cannot run here, as one line, or None when a CUDA GPU and
    bitsandbytes are both present."""
    has_cuda = torch.cuda.is_available()
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if has_cuda and has_bnb:
        return None
    if not has_cuda and not has_bnb:
        missing = "neither"
    elif not has_cuda:
        missing = "no CUDA GPU"
    else:
        missing = "no bitsandbytes (pip install bitsandbytes)"
    return f"{what} needs a CUDA GPU and bitsandbytes; this worker has {missing}"


def qlora_unavailable_reason() -> str | None:
    """Why QLoRA cannot run here, as one line, or None when it can."""
    return bitsandbytes_unavailable_reason("qlora")


def require_adapter_runtime(adapter: AdapterConfig | None) -> None:
    """Fail at once, before data or model loading, when this worker cannot train the adapter at all."""
    if adapter is not None and adapter.type == "qlora":
        reason = qlora_unavailable_reason()
        if reason:
            raise AdapterError(reason)


def quantization_config(adapter: AdapterConfig | None) -> dict[str, Any]:
    """Extra ``from_pretrained`` keyword arguments the adapter needs (4-bit NF4 loading for qlora), else {}."""
    if adapter is None or adapter.type != "qlora":
        return {}
    require_adapter_runtime(adapter)
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        ),
        "dtype": compute,
        # A quantized model cannot be moved after loading: put it on this process's GPU right away.
        "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))},
    }


def _target_modules(adapter: AdapterConfig) -> str | list[str]:
    modules = adapter.target_module_list()
    return "all-linear" if modules == ["all-linear"] else modules


def _lora_config(adapter: AdapterConfig, task: str):
    from peft import LoraConfig

    return LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=_target_modules(adapter),
        use_rslora=adapter.use_rslora,
        use_dora=adapter.type == "dora",
        task_type=TASKS[task],
    )


def lora_config(adapter: AdapterConfig | None, *, task: str = "causal_lm"):
    """A PEFT LoraConfig for lora/dora; None for full fine-tuning.

    Kept for callers written before :func:`apply_adapter`, which handles every adapter type
    (qlora included: it needs the 4-bit model that ``load_model_and_tokenizer(..., adapter=)`` loads).
    """
    if adapter is None or adapter.type == "none":
        return None
    if adapter.type not in ("lora", "dora"):
        raise AdapterError(f"lora_config cannot set up a {adapter.type} adapter; use apply_adapter")
    return _lora_config(adapter, task)


def norm_module_names(model: nn.Module) -> list[str]:
    """Full names of the normalization layers (LayerNorm, RMSNorm, ...) that hold weights of their own."""
    return [
        name
        for name, module in model.named_modules()
        if name
        and "norm" in type(module).__name__.lower()
        and not list(module.children())
        and any(True for _ in module.parameters(recurse=False))
    ]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers: the ModuleList with ``num_hidden_layers`` entries."""
    config = getattr(model, "config", None)
    get_text_config = getattr(config, "get_text_config", None)
    text_config = get_text_config() if callable(get_text_config) else config
    count = getattr(text_config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise AdapterError(f"cannot find the transformer layers of {type(model).__name__} (expected {count} of them)")


def _num_layers(model: nn.Module) -> int | None:
    try:
        return len(decoder_layers(model))
    except AdapterError:
        return None


def _train_head(model: nn.Module, task: str) -> None:
    """A sequence classifier's score head is new: it always trains."""
    if task != "seq_cls":
        return
    from peft.utils.constants import SEQ_CLS_HEAD_NAMES

    for name in SEQ_CLS_HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            head.requires_grad_(True)


def apply_adapter(model, adapter: AdapterConfig | None, *, task: str = "causal_lm"):
    """Apply the adapter choice to a loaded model; returns ``(model, peft_config_or_None)`` for a TRL trainer.

    Pass both to the trainer (``model=..., peft_config=...``). With a peft_config the trainer
    wraps the model in PEFT and the stage outputs an adapter; without one the model's own
    ``requires_grad`` flags say what trains and the stage outputs a full model.
    ``task`` is ``causal_lm`` or ``seq_cls`` (reward models: the score head always trains).
    Raises :class:`AdapterError` with a one-line reason when the adapter does not fit the model or worker.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    kind = "none" if adapter is None else adapter.type
    require_adapter_runtime(adapter)
    errors = adapter_model_errors(
        adapter, parameter_names=[n for n, _ in model.named_parameters()], num_layers=_num_layers(model)
    )
    if errors:
        raise AdapterError("; ".join(errors.values()))

    if kind == "none":
        model.requires_grad_(True)
        return model, None
    if kind in ("lora", "dora", "qlora"):
        if kind == "qlora":
            if not getattr(model, "is_loaded_in_4bit", False):
                raise AdapterError("qlora needs the model loaded in 4 bits: load it with adapter=... set")
            from peft import prepare_model_for_kbit_training

            # Norms and head in fp32, base frozen; the trainer turns gradient checkpointing on per its own args.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return model, _lora_config(adapter, task)
    if kind == "ia3":
        from peft import IA3Config
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD

        targets = _target_modules(adapter)
        # IA3 scales the *input* of feed-forward down projections (as in the paper), every other layer's output.
        known = FEEDFORWARD.get(getattr(model.config, "model_type", None), [])
        feedforward = [m for m in known if targets == "all-linear" or m in targets]
        # As a regex: PEFT saves 'all-linear' resolved to full module names, and a list of short feed-forward
        # names would then fail its "subset of target_modules" check when the adapter is loaded again.
        pattern = r"(.*\.)?(" + "|".join(map(re.escape, feedforward)) + ")" if feedforward else []
        return model, IA3Config(target_modules=targets, feedforward_modules=pattern, task_type=TASKS[task])
    if kind == "prompt_tuning":
        from peft import PromptTuningConfig, PromptTuningInit

        return model, PromptTuningConfig(
            num_virtual_tokens=adapter.num_virtual_tokens,
            # Start from the embeddings of random vocabulary tokens: the right scale for this model.
            prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB,
            task_type=TASKS[task],
        )
    if kind == "layernorm":
        from peft import LNTuningConfig

        names = norm_module_names(model)
        if not names:
            raise AdapterError(f"layernorm: {type(model).__name__} has no normalization layers with weights")
        return model, LNTuningConfig(target_modules=names, task_type=TASKS[task])
    if kind == "bitfit":
        model.requires_grad_(False)
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.requires_grad_(True)
        _train_head(model, task)
        return model, None
    if kind == "freeze":
        model.requires_grad_(True)
        model.get_input_embeddings().requires_grad_(False)  # a tied output head stays frozen with it
        for layer in decoder_layers(model)[: adapter.freeze_layers]:
            layer.requires_grad_(False)
        _train_head(model, task)
        return model, None
    raise AdapterError(f"unknown adapter type {kind!r}")
