"""Ready-made pipelines to start from: the editor opens pre-filled, with the team's datasets of the right kinds.

Each preset is a spec whose stages name a dataset *kind* (`"dataset": "prompt_completion"`) instead of an id;
`preset_spec` picks the team's newest dataset of that kind (or leaves it empty for the user to choose).
"""

from __future__ import annotations

from refinery.data.models import Dataset

PRESETS: dict[str, dict] = {
    "sft-dpo": {
        "label": "SFT → DPO",
        "description": "Teach the format with full supervised fine-tuning, then prefer the chosen answers with a "
        "DPO LoRA adapter (an adapter cannot be trained on top of another adapter).",
        "stages": [
            {
                "name": "sft",
                "method": "sft",
                "dataset": "prompt_completion",
                "eval": "prompt_completion",
                "adapter": {"type": "none"},
            },
            {
                "name": "dpo",
                "method": "dpo",
                "dataset": "preference",
                "input": "sft",
                "adapter": {"type": "lora", "r": 16, "alpha": 32},
            },
        ],
    },
    "sft-grpo": {
        "label": "SFT → GRPO",
        "description": "Supervised fine-tuning, then RL with verifiable rewards (numeric match with the reference).",
        "stages": [
            {
                "name": "sft",
                "method": "sft",
                "dataset": "prompt_completion",
                "eval": "prompt_completion",
                "adapter": {"type": "none"},
            },
            {
                "name": "grpo",
                "method": "grpo",
                "dataset": "reference",
                "input": "sft",
                "adapter": {"type": "none"},
                "config": {"reward_numeric_match_weight": 1.0},
            },
        ],
    },
    "lora-soup": {
        "label": "3 LoRA SFTs → soup → evaluate",
        "description": "Three LoRA fine-tunes with different learning rates, averaged into one model (a model "
        "soup) and evaluated against the base.",
        "stages": [
            {
                "name": "lora-a",
                "method": "sft",
                "dataset": "prompt_completion",
                "adapter": {"type": "lora", "r": 8},
                "config": {"learning_rate": 1e-3},
            },
            {
                "name": "lora-b",
                "method": "sft",
                "dataset": "prompt_completion",
                "adapter": {"type": "lora", "r": 8},
                "config": {"learning_rate": 2e-3},
            },
            {
                "name": "lora-c",
                "method": "sft",
                "dataset": "prompt_completion",
                "adapter": {"type": "lora", "r": 8},
                "config": {"learning_rate": 4e-3},
            },
            {
                "name": "soup",
                "method": "merge",
                "inputs": ["lora-a", "lora-b", "lora-c"],
                "config": {"merge_method": "linear"},
            },
            {"name": "evaluate", "method": "evaluate", "input": "soup", "dataset": "reference"},
        ],
    },
    "sft-export": {
        "label": "SFT → merge adapter → export",
        "description": "A LoRA fine-tune merged into its base and exported as safetensors with a model card, "
        "plus an int8 copy evaluated before and after quantization.",
        "stages": [
            {
                "name": "sft",
                "method": "sft",
                "dataset": "prompt_completion",
                "eval": "prompt_completion",
                "adapter": {"type": "lora", "r": 16, "alpha": 32},
            },
            {
                "name": "export",
                "method": "export",
                "input": "sft",
                "dataset": "prompt_completion",
                "config": {"quantization": "int8_dynamic"},
            },
        ],
    },
    "sft-gate": {
        "label": "SFT → promotion gate",
        "description": "Fine-tune, then compare the result with the model in production on the same held-out "
        "data and promote it only if it is better and forgot no more than allowed (pick a "
        "retention set for the forgetting check). Bind it to a schedule to retrain nightly.",
        "stages": [
            {"name": "sft", "method": "sft", "dataset": "prompt_completion", "adapter": {"type": "none"}},
            {
                "name": "gate",
                "method": "gate",
                "input": "sft",
                "dataset": "prompt_completion",
                "config": {"registered_model": "my-model", "alias": "production"},
            },
        ],
    },
}


def preset_spec(*, team, key: str) -> dict:
    """The preset's spec with the team's newest dataset of each kind filled in (None where it has none)."""
    preset = PRESETS[key]
    newest: dict[str, int | None] = {}

    def dataset_for(kind: str | None) -> int | None:
        if kind is None:
            return None
        if kind not in newest:
            newest[kind] = (
                Dataset.objects.filter(team=team, kind=kind, versions__isnull=False)
                .order_by("-created_at")
                .values_list("pk", flat=True)
                .first()
            )
        return newest[kind]

    stages = []
    for stage in preset["stages"]:
        item = {k: v for k, v in stage.items() if k not in ("dataset", "eval")}
        item["dataset_id"] = dataset_for(stage.get("dataset"))
        item["eval_dataset_id"] = dataset_for(stage.get("eval"))
        stages.append(item)
    return {"seed": 42, "stages": stages}
