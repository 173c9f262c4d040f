"""Simple Preference Optimization: TRL has no SimPO trainer of its own; SimPO is its CPOTrainer with
``loss_type="simpo"`` (and ``cpo_alpha=0``; a positive cpo_alpha gives CPO-SimPO).

TRL 1.16 keeps CPO under ``trl.experimental.cpo``; tests/trainers/test_preference_methods.py imports the
exact classes so that an upgrade that moves or drops them fails CI.
"""

from typing import Any

from trl.experimental.cpo import CPOConfig as TRLCPOConfig
from trl.experimental.cpo import CPOTrainer

from ..events import Events
from ..stage_spec import StageSpec
from .common import training_arguments
from .preference import PreferenceStage, run_stage

__all__ = ["run", "build_trainer", "trl_args"]


def trl_args(spec: StageSpec, *, has_eval: bool) -> TRLCPOConfig:
    """Map the stage's SimPOConfig onto TRL's CPOConfig."""
    cfg = spec.config
    return TRLCPOConfig(
        **training_arguments(spec, cfg, has_eval=has_eval),
        max_length=cfg.max_length,
        loss_type="simpo",
        beta=cfg.beta,
        simpo_gamma=cfg.simpo_gamma,
        cpo_alpha=cfg.cpo_alpha,
        remove_unused_columns=False,  # its collator needs the tokenized columns (it would switch this off itself)
    )


def build_trainer(stage: PreferenceStage) -> CPOTrainer:
    return CPOTrainer(  # reference-free: no reference model at all
        model=stage.model,
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
