"""The export stage: the input model as a standalone model, with a model card and an optional quantized copy.

Phases (one ``progress`` event each): load the input (an adapter is merged into its base by
:func:`~trainers.methods.common.load_model_and_tokenizer`); save it to ``<output_dir>/model`` (safetensors in the
dtype the input was stored in, config, tokenizer, ``README.md``); with held-out data (``spec.eval``), evaluate it;
with a quantization, make the quantized copy in ``<output_dir>/quantized`` and evaluate that too; finally rewrite
the model card with everything measured. Both directories are written atomically (temp sibling + rename); the
card is replaced atomically at the end.

Quantizations (``config.quantization``):

- ``int8_dynamic``: PyTorch's dynamic int8 quantization (``torch.ao.quantization.quantize_dynamic``) of every
  ``nn.Linear``: weights stored as int8 with one scale per tensor, activations quantized on the fly; CPU
  inference. torch 2.13 still ships it (deprecated in favour of torchao, which is not a dependency). The copy is
  the quantized state dict (``torch.save``, loadable with ``weights_only=True``) plus config, tokenizer and a
  README; :func:`load_int8_dynamic` loads it back.
- ``bnb_8bit`` / ``bnb_4bit``: bitsandbytes LLM.int8 / NF4 (double quantization), loaded from the exported
  model onto the GPU and saved with ``save_pretrained`` (the quantization settings travel in config.json, so
  ``AutoModelForCausalLM.from_pretrained`` loads it). Needs a CUDA GPU and bitsandbytes: refused at start
  otherwise, before anything is loaded.

Evaluation (``spec.eval``, at most ``config.max_rows`` rows, the first ones) computes what the evaluate stage
computes on the same rows (:func:`trainers.measures.measure`), so the figures agree: ``prompt_completion`` and
``chat`` data give ``loss`` (per scored token: the completion plus end-of-sequence, or the assistant turns as
the SFT stage scores them) and ``perplexity``; ``reference`` data gives greedy answers (up to
``config.max_new_tokens`` tokens) scored as ``accuracy`` (by the evaluate stage's default accuracy reward),
``exact_match`` and ``mean_reward``. The headline is the evaluate stage's primary metric for the kind
(:data:`trainers.metrics.PRIMARY_METRICS`). The full-precision model is measured on the device the quantized
copy runs on (CPU for int8_dynamic, the GPU for bitsandbytes), so that before and after differ only by the
quantization.
"""

import contextlib
import json
import math
import os
import sys
import time
import warnings
from typing import Any

import torch
from torch import nn

from ..cancel import cancel_requested
from ..catalog import get_method
from ..configs.evaluate import EvaluateConfig
from ..events import Events
from ..measures import measure
from ..metrics import PRIMARY_METRICS, flatten_keys
from ..stage_spec import StageSpec
from .adapter_apply import bitsandbytes_unavailable_reason
from .common import count_parameters, load_model_and_tokenizer, publish_dir, quiet_progress_bars, seed_everything
from .merge import Heartbeat, dir_size, save_model_dir, stored_dtype

__all__ = [
    "run",
    "ExportError",
    "quantization_unavailable_reason",
    "load_int8_dynamic",
    "model_card",
    "QUANTIZED_WEIGHTS",
]

QUANTIZED_WEIGHTS = "quantized_state_dict.pt"  # int8_dynamic: the quantized model's state dict
CARD = "README.md"
EXPORT_KINDS = get_method("export").dataset_kinds  # the held-out data export measures
ACCURACY_REWARD = EvaluateConfig().accuracy_reward


class ExportError(ValueError):
    """An export this worker cannot make (a quantization it lacks the hardware or libraries for)."""


def _quantize_dynamic():
    """``torch.ao.quantization.quantize_dynamic``, or None when this torch no longer has it."""
    try:
        with _quietly():
            from torch.ao.quantization import quantize_dynamic
    except ImportError:
        return None
    return quantize_dynamic


def quantization_unavailable_reason(quantization: str) -> str | None:
    """Why this worker cannot make ``quantization``, as one line, or None when it can."""
    if quantization == "int8_dynamic":
        if _quantize_dynamic() is None:
            return (
                f"int8_dynamic needs torch.ao.quantization.quantize_dynamic, which torch {torch.__version__} "
                "no longer has; choose none, or bnb_8bit / bnb_4bit on a GPU worker"
            )
        if torch.backends.quantized.engine == "none":
            return "int8_dynamic needs a quantized CPU engine (fbgemm, x86, onednn or qnnpack); this torch has none"
        return None
    if quantization in ("bnb_8bit", "bnb_4bit"):
        return bitsandbytes_unavailable_reason(quantization)
    return None


# -- evaluation ----------------------------------------------------------------------------------------------


def _read_eval_rows(spec: StageSpec, max_rows: int) -> list[dict[str, Any]]:
    from ..data import read_rows

    rows = read_rows(spec.eval)
    return rows[:max_rows] if max_rows else rows


def _evaluate(model, tokenizer, rows: list[dict[str, Any]], kind: str, cfg, beat: Heartbeat) -> dict[str, float]:
    """The evaluate stage's measures of ``rows`` (:func:`trainers.measures.measure`; reference answers are scored
    with an evaluate stage's default accuracy reward), plus the number of scored tokens for loss kinds."""
    metrics, details = measure(
        model, tokenizer, rows, kind, accuracy_reward=ACCURACY_REWARD, max_new_tokens=cfg.max_new_tokens, on_batch=beat
    )
    if "tokens" in details:
        metrics["tokens"] = float(details["tokens"])
    return metrics


# -- quantization --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quietly():
    """torch.ao.quantization warns on import and on use that it is deprecated (the module docstring says so)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", message=".*TypedStorage.*")
        yield


def quantize_int8_dynamic(model):
    """``model`` (any float dtype, any device) with every nn.Linear replaced by a dynamic int8 one, on CPU.
    Works in place: the float model is gone afterwards."""
    with _quietly():
        quantize_dynamic = _quantize_dynamic()
        model = model.to("cpu", dtype=torch.float32)
        model.eval()
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


def load_int8_dynamic(path: str):
    """(model, tokenizer) of an int8_dynamic export directory (``<output_dir>/quantized``), on CPU."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model = quantize_int8_dynamic(model)
    with _quietly():
        state = torch.load(os.path.join(path, QUANTIZED_WEIGHTS), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    if os.path.exists(os.path.join(path, "generation_config.json")):
        model.generation_config = GenerationConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def _save_int8(model, tokenizer, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    with _quietly():
        torch.save(model.state_dict(), os.path.join(path, QUANTIZED_WEIGHTS))
    model.config.save_pretrained(path)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _cuda_device() -> torch.device:
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def _bnb_config(quantization: str):
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if quantization == "bnb_8bit":
        return BitsAndBytesConfig(load_in_8bit=True), compute
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    ), compute


def quantize_bnb(model_path: str, quantization: str):
    """The exported model loaded quantized by bitsandbytes onto this process's GPU."""
    from transformers import AutoModelForCausalLM

    config, compute = _bnb_config(quantization)
    device = _cuda_device()
    model = AutoModelForCausalLM.from_pretrained(
        model_path, quantization_config=config, dtype=compute, device_map={"": device.index}
    )
    model.eval()
    return model


def _save_bnb(model, tokenizer, path: str) -> None:
    model.save_pretrained(path, safe_serialization=True)  # config.json carries the quantization_config
    tokenizer.save_pretrained(path)


# -- model card ----------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    """A value as short inline Markdown text (numbers compact, containers as JSON)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, (dict, list, tuple)):
        try:
            text = json.dumps(value, sort_keys=False, default=str, separators=(", ", ": "))
        except (TypeError, ValueError):
            text = str(value)
    else:
        text = str(value)
    return text


def _cell(value: Any, limit: int = 300) -> str:
    text = " ".join(_fmt(value).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _name_of(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("name_or_path") or value.get("name")
    return str(value) if value not in (None, "") else None


def _yaml_str(text: str) -> str:
    return json.dumps(str(text), ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _text(value: Any, limit: int = 1000) -> str:
    """A value as one line of Markdown text (outside tables: pipes need no escaping)."""
    text = " ".join(_fmt(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bullets(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [f"- **{_text(k, 200)}**: {_text(v)}" for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return [f"- {_text(v)}" for v in value]
    return [_text(value, 5000)]


def _human_bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return ""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit} ({int(n):,} bytes)"
    return f"{int(n):,} bytes"


KNOWN_CARD_KEYS = (
    "title",
    "run",
    "pipeline",
    "base_model",
    "base_model_revision",
    "stages",
    "datasets",
    "metrics",
    "lineage",
    "code_version",
    "seed",
)


def model_card(card: dict[str, Any] | None, export: dict[str, Any]) -> str:
    """The model card (README.md): YAML front matter plus Markdown, from the platform's free-form ``card`` facts
    (run, pipeline, base_model, stages, datasets, metrics, lineage, code_version, ...; whatever is present; other
    keys are listed under "Other facts") and the ``export`` facts this stage measured."""
    card = dict(card) if isinstance(card, dict) else {}
    stages = card.get("stages") if isinstance(card.get("stages"), list) else []
    methods: list[str] = []
    for stage in stages:
        method = stage.get("method") if isinstance(stage, dict) else None
        if method and str(method) not in methods:
            methods.append(str(method))
    base = _name_of(card.get("base_model")) or export.get("base_model")

    lines = ["---", "library_name: transformers"]
    if base:
        lines.append(f"base_model: {_yaml_str(base)}")
    lines.append("tags:")
    lines += [f"- {_yaml_str(tag)}" for tag in ["refinery", *methods]]
    lines += ["---", ""]

    title = card.get("title") or (f"Refinery run {card['run']}" if card.get("run") else "Refinery model export")
    lines += [f"# {' '.join(str(title).split())}", ""]
    intro = "A standalone transformers causal language model exported by Refinery"
    if card.get("run"):
        intro += f" from run {_cell(card['run'])}"
    if card.get("pipeline"):
        intro += f" (pipeline {_cell(card['pipeline'])})"
    lines += [intro + ".", ""]

    # What this export is.
    lines += ["## Export", ""]
    rows = [
        ["format", "safetensors, config and tokenizer (`AutoModelForCausalLM.from_pretrained`)"],
        ["dtype", export.get("dtype")],
        ["parameters", f"{export['parameters']:,}" if isinstance(export.get("parameters"), int) else None],
        ["size on disk", _human_bytes(export.get("size_bytes"))],
        ["input", export.get("source")],
    ]
    quantized = export.get("quantized")
    if quantized:
        rows += [
            ["quantized copy", f"{quantized['method']} in `{quantized['dir']}/` ({quantized.get('how', '')})"],
            ["quantized size on disk", _human_bytes(quantized.get("size_bytes"))],
        ]
    else:
        rows.append(["quantized copy", "none"])
    lines += _table(["", "value"], [r for r in rows if r[1] not in (None, "")]) + [""]

    evaluation = export.get("eval")
    if evaluation:
        after_name = quantized["method"] if quantized else None
        lines += ["## Evaluation of this export", ""]
        lines += [
            f"On {evaluation.get('rows')} rows of held-out {evaluation.get('kind')} data"
            f"{' (' + _cell(evaluation['data']) + ')' if evaluation.get('data') else ''}; "
            f"{'higher' if evaluation.get('higher_is_better') else 'lower'} {evaluation.get('metric')} "
            "is better.",
            "",
        ]
        before, after = evaluation.get("before_metrics") or {}, evaluation.get("after_metrics") or {}
        header = ["metric", "full precision"] + ([after_name] if after_name else [])
        lines += _table(header, [[k, before.get(k)] + ([after.get(k)] if after_name else []) for k in before])
        lines.append("")

    if base:
        revision = card.get("base_model_revision")
        lines += ["## Base model", "", f"`{base}`" + (f" (revision `{revision}`)" if revision else ""), ""]

    if stages:
        lines += ["## Training stages", ""]
        table_rows, others = [], []
        for stage in stages:
            if not isinstance(stage, dict):
                others.append(stage)
                continue
            data = stage.get("data")
            if isinstance(data, dict):
                data = " ".join(str(x) for x in (data.get("name"), data.get("version") and f"v{data['version']}") if x)
            table_rows.append(
                [
                    stage.get("name"),
                    stage.get("method"),
                    stage.get("adapter"),
                    stage.get("inputs"),
                    stage.get("config"),
                    data,
                ]
            )
        if table_rows:
            lines += _table(["stage", "method", "adapter", "inputs", "settings", "data"], table_rows)
        lines += (_bullets(others) if others else []) + [""]

    datasets = card.get("datasets")
    if isinstance(datasets, dict):
        datasets = [{"name": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in datasets.items()]
    if datasets:
        lines += ["## Datasets", ""]
        dicts = [d for d in datasets if isinstance(d, dict)] if isinstance(datasets, list) else []
        if dicts:
            lines += _table(
                ["name", "version", "kind", "rows", "sha256"],
                [
                    [
                        d.get("name"),
                        d.get("version"),
                        d.get("kind"),
                        d.get("rows"),
                        f"`{d['sha256']}`" if d.get("sha256") else None,
                    ]
                    for d in dicts
                ],
            )
        rest = [d for d in datasets if not isinstance(d, dict)] if isinstance(datasets, list) else [datasets]
        lines += (_bullets(rest) if rest else []) + [""]

    metrics = card.get("metrics")
    if metrics:
        lines += ["## Metrics", ""]
        if isinstance(metrics, dict):
            lines += _table(["metric", "value"], [[k, v] for k, v in flatten_keys(metrics).items()])
        else:
            lines += _bullets(metrics)
        lines.append("")

    if card.get("lineage"):
        lines += ["## Lineage", ""] + _bullets(card["lineage"]) + [""]

    repro = {k: card[k] for k in ("code_version", "seed") if card.get(k) not in (None, "")}
    if repro:
        lines += ["## Reproducibility", ""] + _bullets(repro) + [""]

    other = {k: v for k, v in card.items() if k not in KNOWN_CARD_KEYS and v not in (None, "", [], {})}
    if other:
        lines += ["## Other facts", ""] + _bullets(other) + [""]

    lines += [
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("path/to/model")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/model")',
        "```",
        "",
    ]
    if quantized:
        lines += [f"The quantized copy (`{quantized['dir']}/`) has its own README on how to load it.", ""]
    return "\n".join(lines)


def _quantized_readme(quantization: str, export: dict[str, Any]) -> str:
    quantized = export["quantized"]
    lines = [
        f"# {quantization} copy",
        "",
        f"A quantized copy of the model in `../model` ({export.get('parameters'):,} parameters, "
        f"{_human_bytes(export.get('size_bytes'))} in {export.get('dtype')}), made by Refinery's export stage.",
        "",
        f"Size on disk: {_human_bytes(quantized.get('size_bytes'))}.",
        "",
    ]
    if quantization == "int8_dynamic":
        lines += [
            "Every `nn.Linear` (the LM head included) is PyTorch dynamic int8 "
            "(`torch.ao.quantization.quantize_dynamic`, qint8 weights, activations quantized per batch); "
            "embeddings and norms stay float32. CPU inference only. The weights are the quantized model's "
            f"state dict in `{QUANTIZED_WEIGHTS}` (torch {quantized.get('torch_version')}, "
            f"engine {quantized.get('engine')}). To load it:",
            "",
            "```python",
            "import torch",
            "from torch import nn",
            "from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer",
            "",
            'path = "path/to/quantized"',
            "model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)",
            "model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)",
            f'model.load_state_dict(torch.load(f"{{path}}/{QUANTIZED_WEIGHTS}", weights_only=True))',
            "tokenizer = AutoTokenizer.from_pretrained(path)",
            "```",
            "",
            "(or `trainers.methods.export.load_int8_dynamic(path)`).",
            "",
        ]
    else:
        kind = "LLM.int8 (8-bit)" if quantization == "bnb_8bit" else "NF4 4-bit with double quantization"
        lines += [
            f"bitsandbytes {kind}; needs a CUDA GPU and bitsandbytes. The quantization settings are in "
            "config.json, so it loads as usual:",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM",
            'model = AutoModelForCausalLM.from_pretrained("path/to/quantized", device_map="auto")',
            "```",
            "",
        ]
    evaluation = export.get("eval")
    if evaluation and evaluation.get("after") is not None:
        lines += [
            f"Held-out {evaluation['metric']}: {_fmt(evaluation['before'])} at full precision, "
            f"{_fmt(evaluation['after'])} quantized ({evaluation['rows']} rows).",
            "",
        ]
    return "\n".join(lines)


def _write_text_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


# -- the runner ----------------------------------------------------------------------------------------------


def run(spec: StageSpec, events: Events) -> dict[str, Any]:
    """Export; returns ``{"status": "finished", "outputs", "summary"}`` or ``{"status": "canceled", "step"}``."""
    cfg = spec.config
    quantization = cfg.quantization
    quiet_progress_bars()
    seed_everything(spec.seed)
    reason = quantization_unavailable_reason(quantization)
    if reason:
        raise ExportError(reason)  # before any data or model is loaded
    kind = spec.eval.kind if spec.eval else None
    if kind is not None and kind not in EXPORT_KINDS:
        raise ExportError(f"export evaluates {', '.join(EXPORT_KINDS[:-1])} or {EXPORT_KINDS[-1]} data, not {kind!r}")
    rows = _read_eval_rows(spec, cfg.max_rows) if spec.eval else None  # data first: a bad row fails fast
    if cancel_requested():
        return {"status": "canceled", "step": 0}

    quantize = quantization != "none"
    total_steps = 2 + int(rows is not None) + int(quantize) + int(rows is not None and quantize) + 1
    step = 0
    beat = Heartbeat(events, total_steps)

    def advance() -> dict[str, Any] | None:
        nonlocal step
        step += 1
        beat.progress(step)
        return {"status": "canceled", "step": step} if cancel_requested() else None

    # 1. Load (an adapter is merged into its base).
    model, tokenizer = load_model_and_tokenizer(spec.model)
    model.requires_grad_(False)
    model.eval()
    dtype = stored_dtype(spec.model)
    _, parameters = count_parameters(model)
    events.emit(
        "started", total_steps=total_steps, trainable_params=0, total_params=parameters, step=0, resumed_from=None
    )
    if (stop := advance()) is not None:
        return stop

    # 2. Save the full-precision model with a first card.
    export: dict[str, Any] = {
        "dtype": str(dtype).removeprefix("torch."),
        "parameters": parameters,
        "source": {k: v for k, v in spec.model.as_dict().items() if v},
        "base_model": spec.model.name_or_path,
        "quantized": None,
        "eval": None,
    }

    def build_model_dir(path: str) -> None:
        save_model_dir(model, tokenizer, path, dtype=dtype)  # noqa: F821 - a closure over the model loaded above (ruff misreads the later `del model`)
        export["size_bytes"] = dir_size(path)
        with open(os.path.join(path, CARD), "w", encoding="utf-8") as fh:
            fh.write(model_card(spec.card, export))

    model_path = publish_dir(build_model_dir, os.path.join(spec.output_dir, "model"))
    size = export["size_bytes"]
    events.emit("metrics", step=step + 1, metrics={"export/size_mb": size / 1e6, "export/parameters": parameters})
    events.emit("artifact", name="model", path=model_path)
    if (stop := advance()) is not None:
        return stop

    # 3. Evaluate the full-precision model where the quantized one will run.
    metric, higher = PRIMARY_METRICS[kind] if kind else (None, None)
    before = after = None
    if rows is not None:
        device = (
            _cuda_device()
            if quantization.startswith("bnb_") or (quantization == "none" and torch.cuda.is_available())
            else torch.device("cpu")
        )
        t0 = time.monotonic()
        before = _evaluate(model.to(device), tokenizer, rows, kind, cfg, beat)
        before["seconds"] = time.monotonic() - t0
        events.emit("metrics", step=step + 1, metrics={f"export/before/{k}": v for k, v in before.items()})
        if (stop := advance()) is not None:
            return stop

    # 4. Quantize and save the copy.
    quantized_path = quantized_size = None
    if quantize:
        target = os.path.join(spec.output_dir, "quantized")
        t0 = time.monotonic()
        if quantization == "int8_dynamic":
            model = quantize_int8_dynamic(model)
            quantized_path = publish_dir(lambda path: _save_int8(model, tokenizer, path), target)  # noqa: F821
            how = "CPU; load with torch.ao.quantization, see its README"
        else:
            del model
            torch.cuda.empty_cache()
            model = quantize_bnb(model_path, quantization)
            quantized_path = publish_dir(lambda path: _save_bnb(model, tokenizer, path), target)  # noqa: F821
            how = "bitsandbytes on a CUDA GPU; loads with from_pretrained"
        quantized_size = dir_size(quantized_path)
        export["quantized"] = {
            "method": quantization,
            "dir": "quantized",
            "how": how,
            "size_bytes": quantized_size,
            "torch_version": torch.__version__,
            "engine": torch.backends.quantized.engine,
        }
        events.emit(
            "metrics",
            step=step + 1,
            metrics={
                "export/quantized_size_mb": quantized_size / 1e6,
                "export/size_ratio": quantized_size / size,
                "export/quantize_seconds": time.monotonic() - t0,
            },
        )
        events.emit("artifact", name="quantized", path=quantized_path)
        if (stop := advance()) is not None:
            return stop

        # 5. Evaluate the quantized copy.
        if rows is not None:
            t0 = time.monotonic()
            after = _evaluate(model, tokenizer, rows, kind, cfg, beat)
            after["seconds"] = time.monotonic() - t0
            events.emit("metrics", step=step + 1, metrics={f"export/after/{k}": v for k, v in after.items()})
            if (stop := advance()) is not None:
                return stop
    del model

    # 6. The final cards.
    evaluation = None
    if rows is not None:
        evaluation = {
            "metric": metric,
            "higher_is_better": higher,
            "before": before[metric],
            "after": after[metric] if after is not None else None,
            "rows": len(rows),
            "kind": kind,
            "before_metrics": {k: v for k, v in before.items() if k != "seconds"},
            "after_metrics": {k: v for k, v in after.items() if k != "seconds"} if after is not None else None,
        }
        evaluation["data"] = os.path.basename(spec.eval.path)
    export["eval"] = evaluation
    _write_text_atomically(os.path.join(model_path, CARD), model_card(spec.card, export))
    if quantized_path:
        _write_text_atomically(os.path.join(quantized_path, CARD), _quantized_readme(quantization, export))
    step += 1
    beat.progress(step)
    print(
        f"[export] {model_path}: {size:,} bytes"
        + (f"; {quantization} copy {quantized_size:,} bytes" if quantized_size else ""),
        file=sys.stderr,
    )

    outputs: dict[str, Any] = {"kind": "model", "path": model_path}
    if quantized_path:
        outputs["extra"] = [{"path": quantized_path, "artifact_path": "quantized"}]
    summary = {
        "size_bytes": size,
        "quantized_size_bytes": quantized_size,
        "quantization": quantization,
        "parameters": parameters,
        "dtype": export["dtype"],
        "eval": evaluation,
    }
    return {"status": "finished", "outputs": outputs, "summary": summary}
