"""Export settings: merge an adapter into its base, save safetensors with the tokenizer and a model card, and
optionally quantize."""

from dataclasses import dataclass

from ..schema import param

QUANTIZATIONS = ("none", "int8_dynamic", "bnb_8bit", "bnb_4bit")


@dataclass(frozen=True)
class ExportConfig:
    """Export the input model as a standalone model (an adapter is merged into its base first): safetensors,
    tokenizer and a generated model card (data, method, metrics, lineage).

    Quantization makes a second, smaller copy: int8_dynamic (PyTorch dynamic int8 linear layers, CPU) or
    bnb_8bit / bnb_4bit (bitsandbytes, needs a CUDA GPU). With a dataset, both copies are evaluated, so the
    stage reports what quantization cost in accuracy and saved in size.
    """

    quantization: str = param(
        "int8_dynamic",
        choices=QUANTIZATIONS,
        group="export",
        help="none: only the full-precision export. int8_dynamic: linear layers stored as int8 and computed with "
        "dynamic activation quantization (CPU inference). bnb_8bit / bnb_4bit: bitsandbytes LLM.int8 / NF4 "
        "(CUDA only; refused at start on a worker without it).",
    )
    max_rows: int = param(
        200,
        min=0,
        max=1_000_000,
        group="evaluation",
        help="Evaluate before and after quantization on at most this many rows of the dataset; 0 means all.",
    )
    max_new_tokens: int = param(
        32,
        min=1,
        max=4096,
        group="evaluation",
        help="Longest generated answer when evaluating reference data.",
    )
