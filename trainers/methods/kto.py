"""Kahneman-Tversky Optimization with TRL's KTOTrainer (stable API since TRL 1.x; trl.experimental.kto is a
deprecated alias), full or with an adapter, on feedback rows or on preference pairs split into two."""

from typing import Any

from trl import KTOConfig as TRLKTOConfig
from trl import KTOTrainer

from ..events import Events
from ..stage_spec import StageSpec
from .common import training_arguments
from .preference import PreferenceStage, frozen_reference, run_stage, unpaired

__all__ = ["run", "build_trainer", "trl_args", "installed_loss_types"]


def installed_loss_types() -> tuple[str, ...]:
    """The choices of the installed TRL's ``KTOConfig.loss_type``; trainers.configs.kto.KTO_LOSS_TYPES mirrors them."""
    return tuple(TRLKTOConfig.__dataclass_fields__["loss_type"].metadata["choices"])


def trl_args(spec: StageSpec, *, has_eval: bool) -> TRLKTOConfig:
    """Map the stage's KTOConfig onto TRL's."""
    cfg = spec.config
    return TRLKTOConfig(
        **training_arguments(spec, cfg, has_eval=has_eval),
        max_length=cfg.max_length,
        loss_type=cfg.loss_type,
        beta=cfg.beta,
        desirable_weight=cfg.desirable_weight,
        undesirable_weight=cfg.undesirable_weight,
    )


def build_trainer(stage: PreferenceStage) -> KTOTrainer:
    seed = stage.spec.seed
    return KTOTrainer(
        model=stage.model,
        ref_model=frozen_reference(stage),  # None with an adapter: the reference is the model without it
        args=trl_args(stage.spec, has_eval=stage.eval_ds is not None),
        train_dataset=unpaired(stage.train_ds, seed=seed),
        eval_dataset=unpaired(stage.eval_ds, seed=seed) if stage.eval_ds is not None else None,
        processing_class=stage.tokenizer,
        peft_config=stage.peft_config,
        callbacks=[stage.callback],
    )


def run(spec: StageSpec, events: Events) -> dict[str, Any]:
    """Train; returns ``{"status": "finished", "outputs", "summary"}`` or ``{"status": "canceled", "step"}``."""
    return run_stage(spec, events, build_trainer)
