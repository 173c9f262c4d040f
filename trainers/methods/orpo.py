"""Odds Ratio Preference Optimization with TRL's ORPOTrainer, full or with an adapter.

TRL 1.16 keeps ORPO under ``trl.experimental.orpo``; tests/trainers/test_preference_methods.py imports the
exact classes so that an upgrade that moves or drops them fails CI.
"""

from typing import Any

from trl.experimental.orpo import ORPOConfig as TRLORPOConfig
from trl.experimental.orpo import ORPOTrainer

from ..events import Events
from ..stage_spec import StageSpec
from .common import training_arguments
from .preference import PreferenceStage, run_stage

__all__ = ["run", "build_trainer", "trl_args"]


def trl_args(spec: StageSpec, *, has_eval: bool) -> TRLORPOConfig:
    """Map the stage's ORPOConfig onto TRL's."""
    cfg = spec.config
    return TRLORPOConfig(
        **training_arguments(spec, cfg, has_eval=has_eval),
        max_length=cfg.max_length,
        beta=cfg.beta,
        remove_unused_columns=False,  # its collator needs the tokenized columns (it would switch this off itself)
    )


def build_trainer(stage: PreferenceStage) -> ORPOTrainer:
    return ORPOTrainer(  # reference-free: no reference model at all
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
