"""The promotion gate's decision: pure arithmetic on the numbers an evaluation measured (no torch).

The gate stage (trainers/methods/gate.py) evaluates the candidate as the model under test and the champion
(the alias's current holder) as the baseline, on the same held-out and retention data, then calls
:func:`gate_decide` with the flat metrics (``eval/<m>``, ``baseline/<m>``, ``retention/<m>``,
``retention_baseline/<m>``). The platform records the result and moves (or keeps) the alias.

Conditions (docs/schedules.md, "Promotion gates"):

- gain (needs a champion): the candidate beats the champion on the target metric by more than 0 and by at
  least ``min_gain`` (absolute: metric units; relative: a fraction of the champion's value);
- forgetting (needs a champion and ``max_forgetting``): the candidate is at most ``max_forgetting`` worse than
  the champion on the retention set's primary metric;
- absolute thresholds (optional, always checked): the candidate's target metric, and its retention metric, at
  least this good.

With no champion only the absolute thresholds decide; without them the first candidate passes.
"""

from __future__ import annotations

import math
from typing import Any

from .configs.gate import GateConfig, optional_number
from .metrics import PRIMARY_METRICS, higher_is_better

__all__ = ["gate_decide", "metric_label", "GateDataError"]

_LABELS = {
    "loss": "loss",
    "perplexity": "perplexity",
    "accuracy": "accuracy",
    "exact_match": "exact match",
    "mean_reward": "mean reward",
    "preference_accuracy": "preference accuracy",
    "logp_margin": "log-p margin",
}


# Differences this small are rounding (0.83 - 0.81 is 0.0199999...): "at least D" allows for them.
EPS = 1e-9


class GateDataError(ValueError):
    """The evaluation does not hold a number the gate needs."""


def metric_label(name: str) -> str:
    return _LABELS.get(name, name.replace("_", " "))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _better(candidate: float, reference: float, higher: bool) -> float:
    """How much better `candidate` is than `reference` (positive: better, `higher`: higher is better), in the
    metric's units."""
    return candidate - reference if higher else reference - candidate


def _number(metrics: dict[str, Any], key: str) -> float:
    value = metrics.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(float(value)):
        raise GateDataError(f"the evaluation has no finite {key!r} (got {value!r})")
    return float(value)


def gate_decide(
    cfg: GateConfig, *, metrics: dict[str, Any], target_kind: str, retention_kind: str | None, has_champion: bool
) -> dict[str, Any]:
    """Decide. Returns a JSON-ready dict: ``passed``, ``checks`` (each ``{"check", "passed", "text"}``), the
    numbers (``metric``, ``higher_is_better``, ``candidate``, ``champion``, ``gain``, ...) and ``reasons`` (the
    texts of the checks that failed, or of all checks when it passed)."""
    metric = cfg.metric or PRIMARY_METRICS[target_kind][0]
    higher = higher_is_better(metric)
    candidate = _number(metrics, f"eval/{metric}")
    checks: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "metric": metric,
        "higher_is_better": higher,
        "candidate": candidate,
        "champion": None,
        "gain": None,
        "gain_mode": cfg.gain_mode,
        "min_gain": cfg.min_gain,
        "has_champion": has_champion,
    }
    label = metric_label(metric)

    if has_champion:
        champion = _number(metrics, f"baseline/{metric}")
        gain = _better(candidate, champion, higher)
        result.update(champion=champion, gain=gain)
        if cfg.gain_mode == "relative":
            if champion == 0:
                relative = math.inf if gain > 0 else (0.0 if gain == 0 else -math.inf)
            else:
                relative = gain / abs(champion)
            result["relative_gain"] = relative if math.isfinite(relative) else None
            ok = gain > EPS and relative >= cfg.min_gain - EPS
            need = f"needs +{cfg.min_gain:.2%}"
            shown = f"{relative:+.2%}" if math.isfinite(relative) else ("+inf" if relative > 0 else "-inf")
        else:
            ok = gain > EPS and gain >= cfg.min_gain - EPS
            need = f"needs > 0 and >= +{_fmt(cfg.min_gain)}" if cfg.min_gain > 0 else "needs > 0"
            shown = f"{gain:+.4g}"
        checks.append(
            {"check": "gain", "passed": ok, "text": f"{label} {_fmt(candidate)} vs {_fmt(champion)} ({shown}; {need})"}
        )

    threshold = optional_number(cfg.target_threshold)
    if threshold is not None:
        ok = candidate >= threshold if higher else candidate <= threshold
        sign = ">=" if higher else "<="
        checks.append(
            {
                "check": "target_threshold",
                "passed": ok,
                "text": f"{label} {_fmt(candidate)} (needs {sign} {_fmt(threshold)})",
            }
        )
        result["target_threshold"] = threshold

    max_forgetting = optional_number(cfg.max_forgetting)
    retention_threshold = optional_number(cfg.retention_threshold)
    if retention_kind is not None and (max_forgetting is not None or retention_threshold is not None or has_champion):
        retention_metric = PRIMARY_METRICS[retention_kind][0]
        r_higher = higher_is_better(retention_metric)
        r_candidate = _number(metrics, f"retention/{retention_metric}")
        result.update(
            retention_metric=retention_metric,
            retention_higher_is_better=r_higher,
            retention_candidate=r_candidate,
            retention_champion=None,
            forgetting=None,
            max_forgetting=max_forgetting,
        )
        r_label = f"retention {metric_label(retention_metric)}"
        if has_champion:
            r_champion = _number(metrics, f"retention_baseline/{retention_metric}")
            forgetting = -_better(r_candidate, r_champion, r_higher)
            result.update(retention_champion=r_champion, forgetting=forgetting)
            if max_forgetting is not None:
                ok = forgetting <= max_forgetting + EPS
                checks.append(
                    {
                        "check": "forgetting",
                        "passed": ok,
                        "text": f"retention drop {_fmt(forgetting)} (limit {_fmt(max_forgetting)}; "
                        f"{r_label} {_fmt(r_candidate)} vs {_fmt(r_champion)})",
                    }
                )
        if retention_threshold is not None:
            ok = r_candidate >= retention_threshold if r_higher else r_candidate <= retention_threshold
            sign = ">=" if r_higher else "<="
            checks.append(
                {
                    "check": "retention_threshold",
                    "passed": ok,
                    "text": f"{r_label} {_fmt(r_candidate)} (needs {sign} {_fmt(retention_threshold)})",
                }
            )
            result["retention_threshold"] = retention_threshold
    elif max_forgetting is not None or retention_threshold is not None:
        raise GateDataError("the gate has a retention condition but the stage has no retention set")

    if not has_champion and not checks:
        checks.append(
            {
                "check": "first",
                "passed": True,
                "text": f"no holder yet and no absolute thresholds: the first candidate passes "
                f"({label} {_fmt(candidate)})",
            }
        )
    elif not has_champion:
        checks.insert(0, {"check": "first", "passed": True, "text": "no holder yet: the absolute thresholds decide"})
    passed = all(c["passed"] for c in checks)
    result["passed"] = passed
    result["checks"] = checks
    result["reasons"] = [c["text"] for c in checks if passed or not c["passed"]]
    return result
