"""Model merging on state dicts: linear soups, task arithmetic, TIES, DARE (with and without TIES)
and Model Stock.

The task-vector methods use PEFT's tensor functions (``peft.utils.merge_utils``: task_arithmetic,
ties, dare_linear, dare_ties), applied to each parameter's task vectors (fine-tuned minus base).
PEFT has no linear soup of whole weights (trivial) and no Model Stock, which is written here after
Jang et al., "Model Stock: All we need is just a few fine-tuned models" (ECCV 2024), eq. 4-5:
per weight tensor, with N fine-tuned models w_i of the base w_0 and cos(theta) the mean pairwise
cosine similarity of their task vectors w_i - w_0,

    t = N cos(theta) / (1 + (N - 1) cos(theta)),   w = t * mean(w_i) + (1 - t) * w_0.

Inputs are state dicts with the same keys and shapes (checked first, with the offending key named).
Tensors that are not floating point (step counters, integer buffers) are taken from the first model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .configs.merge import MERGE_METHODS as METHODS

NEEDS_BASE = {"task_arithmetic", "ties", "dare_linear", "dare_ties", "model_stock"}
USES_DENSITY = {"ties", "dare_linear", "dare_ties"}


class MergeError(ValueError):
    """Inputs that cannot be merged; the message says which input and which tensor."""


def _check(models: Sequence[dict[str, torch.Tensor]], base: dict[str, torch.Tensor] | None) -> None:
    if len(models) < 2 and base is None:
        raise MergeError("a merge needs at least two models (or one model and the base)")
    reference = models[0]
    named = [(f"model {i + 1}", m) for i, m in enumerate(models)] + ([("the base", base)] if base is not None else [])
    for name, state in named[1:]:
        missing = sorted(set(reference) - set(state))
        extra = sorted(set(state) - set(reference))
        if missing or extra:
            detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
            raise MergeError(
                f"{name} does not have the same tensors as model 1 ({detail}): "
                "merged models must share one architecture"
            )
        for key, tensor in reference.items():
            if state[key].shape != tensor.shape:
                raise MergeError(
                    f"{name}: tensor {key!r} has shape {tuple(state[key].shape)}, model 1 has {tuple(tensor.shape)}"
                )


def model_stock(tensors: Sequence[torch.Tensor], base: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    """Model Stock for one weight tensor (see the module docstring)."""
    n = len(tensors)
    if n < 2:
        raise MergeError("model_stock needs at least two fine-tuned models")
    deltas = [(t - base).flatten().double() for t in tensors]
    cosines = []
    for i in range(n):
        for j in range(i + 1, n):
            denom = deltas[i].norm() * deltas[j].norm()
            cosines.append(float(deltas[i] @ deltas[j] / denom) if denom > eps else 1.0)
    cos = sum(cosines) / len(cosines)
    ratio = n * cos / (1 + (n - 1) * cos) if abs(1 + (n - 1) * cos) > eps else 0.0
    average = torch.stack([t.double() for t in tensors]).mean(dim=0)
    return (ratio * average + (1 - ratio) * base.double()).to(base.dtype)


def merge_tensors(
    method: str,
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None = None,
    weights: Sequence[float] | None = None,
    density: float = 1.0,
    majority_sign_method: str = "total",
) -> torch.Tensor:
    """Merge one tensor across models. ``weights`` default to 1/N for ``linear`` and 1 otherwise."""
    from peft.utils import merge_utils

    if method not in METHODS:
        raise MergeError(f"unknown merge method {method!r}; choose one of {', '.join(METHODS)}")
    n = len(tensors)
    if weights is None:
        weights = [1.0 / n] * n if method == "linear" else [1.0] * n
    if len(weights) != n:
        raise MergeError(f"{len(weights)} weights for {n} models")
    if method in USES_DENSITY and not 0 < density <= 1:
        raise MergeError(f"density must be in (0, 1], got {density}")
    if method == "linear":
        dtype = tensors[0].dtype
        return sum(w * t.double() for w, t in zip(weights, tensors)).to(dtype)
    if base is None:
        raise MergeError(f"{method} needs the base model the inputs were fine-tuned from")
    if method == "model_stock":
        return model_stock(tensors, base)
    deltas = [(t - base).double() for t in tensors]
    w = torch.tensor(list(weights), dtype=torch.float64)
    if method == "task_arithmetic":
        merged = merge_utils.task_arithmetic(deltas, w)
    elif method == "ties":
        merged = merge_utils.ties(deltas, w, density, majority_sign_method)
    elif method == "dare_linear":
        merged = merge_utils.dare_linear(deltas, w, density)
    else:
        merged = merge_utils.dare_ties(deltas, w, density, majority_sign_method)
    return (base.double() + merged).to(base.dtype)


def merge_state_dicts(
    method: str,
    models: Sequence[dict[str, torch.Tensor]],
    *,
    base: dict[str, torch.Tensor] | None = None,
    weights: Sequence[float] | None = None,
    density: float = 1.0,
    majority_sign_method: str = "total",
    seed: int | None = None,
) -> dict[str, torch.Tensor]:
    """Merge whole state dicts tensor by tensor. ``seed`` makes DARE's random drops repeatable."""
    if method in NEEDS_BASE and base is None:
        raise MergeError(f"{method} needs the base model the inputs were fine-tuned from")
    _check(models, base)
    if seed is not None:
        torch.manual_seed(seed)
    merged: dict[str, torch.Tensor] = {}
    for key, first in models[0].items():
        if not torch.is_floating_point(first):
            merged[key] = first.clone()
            continue
        merged[key] = merge_tensors(
            method,
            [m[key] for m in models],
            base=None if base is None else base[key],
            weights=weights,
            density=density,
            majority_sign_method=majority_sign_method,
        )
    return merged
