"""The merge stage: combine the models of several earlier stages into one full model.

Each entry of ``spec.inputs`` is a full model directory, or an adapter (``adapter_path``) of the base model it was
trained on (``name_or_path``). Every input is loaded as a whole causal LM state dict -- an adapter is merged into
its base first (PEFT ``merge_and_unload``, through :func:`~trainers.methods.common.load_model_and_tokenizer`) --
and the state dicts are merged tensor by tensor with :func:`trainers.merge_math.merge_state_dicts` (linear soup,
task arithmetic, TIES, DARE with and without TIES, Model Stock). The task-vector methods take differences from
``spec.model``, the run's base model.

Why whole-weight task vectors rather than PEFT's ``add_weighted_adapter``: that API combines LoRA adapters only
(no full models, no other adapter types, no mix of the two), and it is exact only for ``cat`` (the rank grows to
the sum of the ranks): ``linear`` and the TIES / DARE / magnitude-prune variants are applied to the A and B
factors separately (with square-rooted weights), which is not the same as merging the weight updates B @ A, and
the ``*_svd`` variants approximate the merged update with a truncated SVD. Working on merged weights is exact for
any adapter type and for mixed adapter / full-model inputs, and the TIES / DARE arithmetic itself is still
PEFT's (``peft.utils.merge_utils``, applied per tensor by trainers/merge_math.py). The cost is memory: whole models
instead of adapter factors.

Memory: ``linear`` and ``task_arithmetic`` are running sums, so they hold at most three models at a time (the
running sum, the input being added and, for task arithmetic, the base), whatever the number of inputs. ``ties``,
``dare_linear``, ``dare_ties`` and ``model_stock`` need every input's value of a tensor at once (sign election,
agreement between task vectors), so they hold all inputs plus the base plus the result in CPU memory.

Weights (``config.weights``, one per input, in the order of ``spec.inputs``): ``linear`` uses them normalised to
sum to 1 (a weighted average; empty: 1/N each); the task-vector methods use them as given (empty: 1 each);
``model_stock`` derives its own interpolation ratio per tensor and takes none. The summary reports the weights
actually used.

The merged model is saved in the dtype the first input (or, for an adapter, its base) was stored in, with the
first input's tokenizer and config, as safetensors in ``<output_dir>/model``.
"""

import json
import os
import re
import time
from typing import Any

import torch

from ..cancel import cancel_requested
from ..configs.merge import parse_weights
from ..events import Events
from ..merge_math import NEEDS_BASE, USES_DENSITY, MergeError, merge_state_dicts
from ..stage_spec import ModelRef, StageSpec
from .common import load_model_and_tokenizer, publish_dir, quiet_progress_bars, seed_everything

__all__ = ["run", "MergeInputError", "Heartbeat", "stored_dtype", "save_model_dir", "dir_size"]

STREAMING = ("linear", "task_arithmetic")  # methods merged as a running sum, one input at a time
CHUNK_TENSORS = 16  # ties & co. merge this many tensors per call, with a heartbeat in between


class Heartbeat:
    """Repeats the current ``progress`` event at most every ``interval_s`` during a long phase, so that the
    supervisor (which kills a stage silent for REFINERY_STALL_SECONDS) sees the stage is alive."""

    def __init__(self, events: Events, total_steps: int, interval_s: float = 10.0):
        self.events, self.total_steps, self.interval_s = events, total_steps, interval_s
        self.step = 0
        self._last = time.monotonic()

    def progress(self, step: int) -> None:
        """A phase is done: send its progress event."""
        self.step = step
        self._last = time.monotonic()
        self.events.emit("progress", step=step, total_steps=self.total_steps, epoch=0.0)

    def __call__(self) -> None:
        """Within a phase: repeat the last progress event if the stage has been quiet for a while."""
        if time.monotonic() - self._last >= self.interval_s:
            self.progress(self.step)


class MergeInputError(ValueError):
    """Inputs that cannot be merged (other architecture or tensor shapes, a wrong number of weights); the message
    names the stage whose input is at fault."""


def stored_dtype(ref: ModelRef) -> torch.dtype:
    """The floating-point dtype ``ref.name_or_path`` is stored in (its config's ``dtype``), float32 if unknown."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(ref.name_or_path, revision=ref.revision)
    except (OSError, ValueError):
        return torch.float32
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value.removeprefix("torch."), None)
    return value if isinstance(value, torch.dtype) and value.is_floating_point else torch.float32


def dir_size(path: str, *, skip: tuple[str, ...] = ()) -> int:
    """Bytes of every file under ``path`` (names in ``skip`` at the top level left out)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            if root == path and name in skip:
                continue
            total += os.path.getsize(os.path.join(root, name))
    return total


def save_model_dir(model, tokenizer, path: str, *, dtype: torch.dtype) -> None:
    """Weights (safetensors, in ``dtype``), config, generation config and tokenizer into ``path``."""
    if dtype != next(model.parameters()).dtype:
        model.to(dtype)
    model.config.use_cache = True
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def _metric_key(name: str) -> str:
    """A stage name as part of a metric key (MLflow allows letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "input"


def _float_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """The floating-point tensors' keys, each storage once (tied weights, e.g. embeddings and the LM head, share
    one tensor under two names: it must be summed once)."""
    keys, seen = [], set()
    for key, tensor in state.items():
        if torch.is_floating_point(tensor) and tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            keys.append(key)
    return keys


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """L2 norm of the difference of two state dicts (floating-point tensors, tied ones once)."""
    return sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in _float_keys(a)) ** 0.5


def _signature(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(t.shape) for key, t in state.items()}


def _check_fits(
    name: str,
    model_type: str,
    signature: dict[str, tuple[int, ...]],
    ref_name: str,
    ref_type: str,
    ref_signature: dict[str, tuple[int, ...]],
) -> None:
    """Refuse ``name``'s model when it does not share the reference model's architecture and tensor shapes."""
    what = f"the input of stage {name!r}" if name != "base" else "the base model"
    ref_what = f"the input of stage {ref_name!r}" if ref_name != "base" else "the base model"
    if model_type != ref_type:
        raise MergeInputError(
            f"{what} is a {model_type} model, {ref_what} a {ref_type} model: merged models must share one architecture"
        )
    missing = sorted(set(ref_signature) - set(signature))
    extra = sorted(set(signature) - set(ref_signature))
    if missing or extra:
        detail = f"it lacks {missing[:3]}" if missing else f"it has {extra[:3]} in addition"
        raise MergeInputError(
            f"{what} does not have the tensors of {ref_what} ({detail}): merged models must share one architecture"
        )
    for key, shape in ref_signature.items():
        if signature[key] != shape:
            raise MergeInputError(
                f"{what} does not fit {ref_what}: tensor {key!r} has shape {signature[key]} "
                f"there and {shape} in {ref_what}; merged models must share one architecture "
                "and parameter shapes"
            )


def _weights(method: str, given: list[float], names: list[str]) -> list[float]:
    """The weights to merge with (see the module docstring); MergeInputError when their number is wrong."""
    n = len(names)
    if method == "model_stock":
        if given:
            raise MergeInputError("model_stock derives its own weights; leave weights empty")
        return []
    if not given:
        return [1.0 / n] * n if method == "linear" else [1.0] * n
    if len(given) != n:
        raise MergeInputError(
            f"{len(given)} weight{'s' if len(given) != 1 else ''} for {n} inputs "
            f"({', '.join(names)}): give one weight per input, in that order, or none"
        )
    if method == "linear":
        total = sum(given)
        if total <= 0:
            raise MergeInputError(f"a linear merge needs weights that sum to more than 0, got {given}")
        return [w / total for w in given]
    return list(given)


def _load(ref: ModelRef):
    """(model, tokenizer) of one input in float32 on CPU, an adapter merged into its base."""
    model, tokenizer = load_model_and_tokenizer(ref)
    model.requires_grad_(False)
    model.eval()
    return model, tokenizer


def _state(model) -> dict[str, torch.Tensor]:
    """The model's tensors by state-dict name (sharing storage with the model: in-place edits change it)."""
    return {key: value.detach() for key, value in model.state_dict().items()}


def run(spec: StageSpec, events: Events) -> dict[str, Any]:
    """Merge ``spec.inputs``; returns ``{"status": "finished", "outputs", "summary"}`` or a canceled result."""
    cfg = spec.config
    quiet_progress_bars()
    seed_everything(spec.seed)
    names = [name for name, _ in spec.inputs]
    refs = [ref for _, ref in spec.inputs]
    if len(refs) < 2:
        raise MergeInputError(f"a merge needs at least 2 inputs, got {len(refs)}")
    method = cfg.merge_method
    weights = _weights(method, parse_weights(cfg.weights), names)
    needs_base = method in NEEDS_BASE
    if cancel_requested():
        return {"status": "canceled", "step": 0}

    total_steps = len(refs) + int(needs_base) + 2  # load each model, merge, save
    step = 0
    beat = Heartbeat(events, total_steps)
    started = False
    reference: tuple[str, str, dict[str, tuple[int, ...]]] | None = None  # (name, model_type, shapes)
    metrics: dict[str, float] = {"merge/inputs": float(len(refs))}

    def loaded(name: str, model) -> dict[str, torch.Tensor]:
        """Check a freshly loaded model against the first one, send started/progress; its state dict."""
        nonlocal step, started, reference
        state = _state(model)
        model_type = str(getattr(model.config, "model_type", ""))
        if reference is None:
            reference = (name, model_type, _signature(state))
        else:
            _check_fits(name, model_type, _signature(state), *reference)
        step += 1
        if not started:
            started = True
            total = sum(p.numel() for p in model.parameters())
            events.emit(
                "started", total_steps=total_steps, trainable_params=0, total_params=total, step=0, resumed_from=None
            )
        beat.progress(step)
        return state

    def canceled() -> dict[str, Any] | None:
        return {"status": "canceled", "step": step} if cancel_requested() else None

    base_state: dict[str, torch.Tensor] | None = None
    if needs_base:
        t0 = time.monotonic()
        base_model, _ = _load(spec.model)
        base_state = loaded("base", base_model)
        metrics["merge/load_seconds/base"] = time.monotonic() - t0
        if (stop := canceled()) is not None:
            return stop

    vessel = tokenizer = None  # the first input's model object: it receives the merged weights
    merged: dict[str, torch.Tensor] | None = None  # the running sum (linear, task_arithmetic)
    states: list[dict[str, torch.Tensor]] = []  # every input (ties, dare_*, model_stock)
    for i, (name, ref) in enumerate(zip(names, refs)):
        t0 = time.monotonic()
        model, input_tokenizer = _load(ref)
        state = loaded(name, model)
        key = _metric_key(name)
        metrics[f"merge/load_seconds/{key}"] = time.monotonic() - t0
        if base_state is not None:
            metrics[f"merge/task_vector_norm/{key}"] = _distance(state, base_state)
        if weights:
            metrics[f"merge/weight/{key}"] = weights[i]
        if vessel is None:
            vessel, tokenizer = model, input_tokenizer
            dtype = stored_dtype(ModelRef(ref.name_or_path, ref.revision))
        if method in STREAMING:
            merged = _accumulate(method, merged, state, base_state, weights[i], beat=beat)
        else:
            states.append(state)
        del model, state
        if (stop := canceled()) is not None:
            return stop

    t0 = time.monotonic()
    if method not in STREAMING:
        try:
            merged = _merge_all(method, states, base_state, weights, cfg, seed=spec.seed, beat=beat)
        except MergeError as exc:  # the checks above make this unlikely; name the inputs anyway
            raise MergeInputError(f"cannot merge the inputs of {', '.join(map(repr, names))}: {exc}") from None
        states.clear()
    assert merged is not None and vessel is not None
    if base_state is not None:
        metrics["merge/distance_from_base"] = _distance(merged, base_state)
    vessel.load_state_dict(merged, strict=True)  # a copy in place for ties & co.; no-op-like for running sums
    del merged, base_state
    metrics["merge/merge_seconds"] = time.monotonic() - t0
    step += 1
    beat.progress(step)
    events.emit("metrics", step=step, metrics=metrics)
    if (stop := canceled()) is not None:
        return stop

    path = publish_dir(
        lambda tmp: _save(vessel, tokenizer, tmp, dtype=dtype, spec=spec, names=names, weights=weights),
        os.path.join(spec.output_dir, "model"),
    )
    step += 1
    size = dir_size(path)
    beat.progress(step)
    events.emit("metrics", step=step, metrics={"merge/size_mb": size / 1e6})
    events.emit("artifact", name="model", path=path)
    summary = {
        "merge_method": method,
        "inputs": names,
        "weights": weights,
        "density": cfg.density if method in USES_DENSITY else None,
        "majority_sign_method": cfg.majority_sign_method if method in ("ties", "dare_ties") else None,
        "size_bytes": size,
        **{k: v for k, v in metrics.items() if not k.startswith("merge/load_seconds")},
    }
    return {"status": "finished", "outputs": {"kind": "model", "path": path}, "summary": summary}


def _merge_all(
    method: str,
    states: list[dict[str, torch.Tensor]],
    base: dict[str, torch.Tensor] | None,
    weights: list[float],
    cfg,
    *,
    seed: int,
    beat: Heartbeat,
) -> dict[str, torch.Tensor]:
    """:func:`merge_state_dicts` over all inputs, a few tensors per call with a heartbeat in between. The seed
    is set once, before the first call, so DARE's random drops are those of a single call."""
    keys = list(states[0])
    merged: dict[str, torch.Tensor] = {}
    for begin in range(0, len(keys), CHUNK_TENSORS):
        chunk = keys[begin : begin + CHUNK_TENSORS]
        merged.update(
            merge_state_dicts(
                method,
                [{k: s[k] for k in chunk} for s in states],
                base=None if base is None else {k: base[k] for k in chunk},
                weights=weights or None,
                density=cfg.density,
                majority_sign_method=cfg.majority_sign_method,
                seed=seed if begin == 0 else None,
            )
        )
        beat()
    return merged


def _accumulate(
    method: str,
    merged: dict[str, torch.Tensor] | None,
    state: dict[str, torch.Tensor],
    base: dict[str, torch.Tensor] | None,
    weight: float,
    *,
    beat: Heartbeat,
) -> dict[str, torch.Tensor]:
    """Add one input to the running sum, in place on the first input's tensors (computed in float64 per tensor).

    linear: sum_i w_i * m_i. task_arithmetic: base + sum_i w_i * (m_i - base). The same arithmetic as
    trainers/merge_math.py (whose task_arithmetic is PEFT's weighted sum of task vectors), one input at a time.
    Tensors that are not floating point are the first input's.
    """
    first = merged is None
    merged = state if first else merged
    for key in _float_keys(merged):
        target = merged[key]
        value = state[key].double()
        if method == "task_arithmetic":
            assert base is not None
            value = value - base[key].double()
            start = base[key].double() if first else target.double()
        else:
            start = torch.zeros_like(value) if first else target.double()
        target.copy_(start + weight * value)
        beat()
    return merged


def _save(
    model, tokenizer, path: str, *, dtype: torch.dtype, spec: StageSpec, names: list[str], weights: list[float]
) -> None:
    save_model_dir(model, tokenizer, path, dtype=dtype)
    cfg = spec.config
    facts = {
        "merge_method": cfg.merge_method,
        "inputs": [{"stage": name, **ref.as_dict()} for name, ref in spec.inputs],
        "base": spec.model.as_dict() if cfg.merge_method in NEEDS_BASE else None,
        "weights": weights,
        "density": cfg.density if cfg.merge_method in USES_DENSITY else None,
        "majority_sign_method": cfg.majority_sign_method if cfg.merge_method in ("ties", "dare_ties") else None,
        "seed": spec.seed,
    }
    with open(os.path.join(path, "merge.json"), "w", encoding="utf-8") as fh:
        json.dump(facts, fh, indent=2)
