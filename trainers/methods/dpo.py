"""Direct Preference Optimization with TRL's DPOTrainer, full or with an adapter."""

import re
from typing import Any

from trl import DPOConfig as TRLDPOConfig
from trl import DPOTrainer

from ..events import Events
from ..stage_spec import StageSpec
from .common import training_arguments
from .preference import PreferenceStage, frozen_reference, run_stage

__all__ = ["run", "build_trainer", "trl_args", "installed_loss_types"]


def installed_loss_types() -> tuple[str, ...]:
    """The loss variants the installed TRL documents for ``DPOConfig.loss_type`` (it keeps them in the
    field's help text, not in a Literal); trainers.configs.dpo.DPO_LOSS_TYPES mirrors them."""
    help_text = TRLDPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    return tuple(re.findall(r"`'(\w+)'`", help_text.split("If multiple")[0]))


def trl_args(spec: StageSpec, *, has_eval: bool) -> TRLDPOConfig:
    """Map the stage's DPOConfig onto TRL's."""
    cfg = spec.config
    installed = installed_loss_types()
    if installed and cfg.loss_type not in installed:  # fail before training, not at its first step
        raise ValueError(f"the installed TRL has no DPO loss {cfg.loss_type!r} (it has {', '.join(installed)})")
    return TRLDPOConfig(
        **training_arguments(spec, cfg, has_eval=has_eval),
        max_length=cfg.max_length,
        loss_type=[cfg.loss_type],
        beta=cfg.beta,
        label_smoothing=cfg.label_smoothing,
    )


def build_trainer(stage: PreferenceStage) -> DPOTrainer:
    return DPOTrainer(
        model=stage.model,
        ref_model=frozen_reference(stage),  # None with an adapter: the reference is the model without it
        args=trl_args(stage.spec, has_eval=stage.eval_ds is not None),
        train_dataset=stage.train_ds,
        eval_dataset=stage.eval_ds,
        processing_class=stage.tokenizer,
        peft_config=stage.peft_config,
        callbacks=[stage.callback],
    )


def run(spec: StageSpec, events: Events) -> dict[str, Any]:
    """Train; returns ``{"status": "finished", "outputs", "summary"}`` or ``{"status": "canceled", "step"}``."""
    return run_stage(spec, events, build_trainer)
