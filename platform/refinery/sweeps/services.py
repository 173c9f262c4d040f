"""Sweeps: check every trial of a grid or random sample first, then queue all their runs in one transaction."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from refinery.pipelines.models import Pipeline, PipelineVersion
from refinery.pipelines.services import pipeline_current_version
from refinery.pipelines.specs import SpecError, apply_overrides, auto_evaluate_stages, pipeline_spec_normalize
from refinery.runs.services import RunError, run_create
from refinery.sweeps.models import MAX_TRIALS, Sweep, SweepTrial
from refinery.sweeps.parameters import parameters_check, trial_count, trial_overrides
from refinery.teams.quotas import QuotaExceeded, team_runs_check
from refinery.teams.services import audit

MAX_TRIAL_ERRORS = 5  # failing trials listed one by one; the rest are counted
_STAGE_KEY = re.compile(r"^stages\.(?P<index>\d+)\.(?P<rest>(?:config|adapter)\.[a-z_][a-z0-9_]*)$")


class SweepError(Exception):
    """A sweep cannot be made as asked; `errors` maps a form field to a message naming the problem."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(errors.values()))


@dataclass(frozen=True)
class SweepPlan:
    name: str
    mode: str
    parameters: list[dict]
    samples: int
    metric: str
    goal: str
    seed: int
    trials: list[dict[str, Any]]  # each trial's overrides, in trial order


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _trial_label(index: int, overrides: dict[str, Any], key: str, stage_names: list[str]) -> str:
    """ "trial 3 (a.config.learning_rate=7)": the parameter the error is about, or all of the trial's."""
    match = _STAGE_KEY.match(key)
    path = None
    if match and int(match["index"]) < len(stage_names):
        path = f"{stage_names[int(match['index'])]}.{match['rest']}"
    shown = {path: overrides[path]} if path in overrides else overrides
    return f"trial {index} ({', '.join(f'{p}={_fmt(v)}' for p, v in shown.items())})"


def _int_or_none(value: Any) -> int | None | str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return str(value)


def sweep_plan(
    *,
    pipeline: Pipeline,
    version: PipelineVersion,
    name: str,
    mode: str,
    parameters: Any,
    metric: str,
    goal: str,
    samples: Any = None,
    seed: Any = None,
) -> SweepPlan:
    """Check a sweep without saving anything: its fields, each parameter against the version's stages, the
    number of runs, and every trial's whole spec as pipeline_spec_normalize sees it. Raises SweepError
    with every problem found, each naming the field, parameter or trial (and value) it is about."""
    errors: dict[str, str] = {}
    team = pipeline.team
    name = (name or "").strip()
    if not name:
        errors["name"] = "name: give the sweep a name"
    elif len(name) > 100:
        errors["name"] = "name: at most 100 characters"
    elif Sweep.objects.filter(team=team, name=name).exists():
        errors["name"] = f"name: this team already has a sweep called {name!r}"
    if mode not in Sweep.Mode.values:
        errors["mode"] = f"mode: must be grid or random, got {mode!r}"
    if goal not in Sweep.Goal.values:
        errors["goal"] = f"goal: must be min or max, got {goal!r}"
    samples = _int_or_none(samples) if mode == "random" else 0
    if mode == "random" and (not isinstance(samples, int) or not 1 <= samples <= MAX_TRIALS):
        errors["samples"] = f"samples: a random sweep draws 1 to {MAX_TRIALS} trials, got {samples!r}"
    seed = _int_or_none(seed)
    if seed is None:
        seed = secrets.randbelow(2**31)
    elif not isinstance(seed, int) or not 0 <= seed < 2**31:
        errors["seed"] = f"seed: must be an integer between 0 and 2147483647, got {seed!r}"
    checked, problems = parameters_check(spec=version.spec, mode=mode, parameters=parameters)
    errors.update(problems)
    metric = (metric or "").strip()
    if "/" not in metric or not metric.split("/", 1)[1]:
        errors["metric"] = f"metric: write it as <stage>/<key>, e.g. train/loss of a stage, got {metric!r}"
    if errors:
        raise SweepError(errors)

    count = trial_count(mode=mode, parameters=checked, samples=samples)
    if count > MAX_TRIALS:
        sizes = " x ".join(str(len(p["values"])) for p in checked)
        raise SweepError(
            {
                "parameters": f"parameters: this grid makes {sizes} = {count} runs; a sweep makes at "
                f"most {MAX_TRIALS}. Drop some values or use a random sweep"
            }
        )
    trials = trial_overrides(spec=version.spec, mode=mode, parameters=checked, samples=samples, seed=seed)
    failing: list[int] = []
    stage_names: list[str] = []
    spec_names = [s.get("name") for s in version.spec.get("stages") or []]
    for index, overrides in enumerate(trials, 1):
        try:
            spec = apply_overrides(version.spec, overrides)
            normalized = pipeline_spec_normalize(team=team, spec=spec, base_model=version.base_model)
        except SpecError as exc:
            failing.append(index)
            if len(failing) <= MAX_TRIAL_ERRORS:
                errors[f"trials.{index}"] = "; ".join(
                    f"{_trial_label(index, overrides, key, spec_names)}: {message}"
                    for key, message in exc.errors.items()
                )
            continue
        if not stage_names:
            stage_names = [s["name"] for s in normalized["stages"] + auto_evaluate_stages(normalized)]
    if len(failing) > MAX_TRIAL_ERRORS:
        errors["trials"] = f"and {len(failing) - MAX_TRIAL_ERRORS} more of the {count} trials fail too"
    stage = metric.split("/", 1)[0]
    if stage_names and stage not in stage_names:
        errors["metric"] = (
            f"metric: {metric!r} names no stage of this pipeline's runs (stages: {', '.join(stage_names)})"
        )
    if errors:
        raise SweepError(errors)
    return SweepPlan(
        name=name, mode=mode, parameters=checked, samples=samples, metric=metric, goal=goal, seed=seed, trials=trials
    )


@transaction.atomic
def sweep_create(
    *,
    pipeline: Pipeline,
    user,
    name: str,
    mode: str,
    parameters: Any,
    metric: str,
    goal: str,
    samples: Any = None,
    seed: Any = None,
    version: PipelineVersion | None = None,
) -> Sweep:
    """Run a pipeline version (the current one by default) once per trial of a grid or random sample of its
    settings. Every trial is checked first (sweep_plan); then all runs are created and queued together, in
    this one transaction: all of them or, on any error, none (and no sweep)."""
    version = version or pipeline_current_version(pipeline)
    if version.pipeline_id != pipeline.pk:
        raise SweepError({"version": f"version: v{version.number} is not a version of {pipeline.name!r}"})
    plan = sweep_plan(
        pipeline=pipeline,
        version=version,
        name=name,
        mode=mode,
        parameters=parameters,
        metric=metric,
        goal=goal,
        samples=samples,
        seed=seed,
    )
    try:  # all of the sweep's runs against the team's queued-runs limit, before any is made
        team_runs_check(team=pipeline.team, adding=len(plan.trials))
    except QuotaExceeded as exc:
        raise SweepError({"runs": str(exc)}) from None
    sweep = Sweep.objects.create(
        team=pipeline.team,
        pipeline=pipeline,
        pipeline_version=version,
        name=plan.name,
        mode=plan.mode,
        parameters=plan.parameters,
        samples=plan.samples,
        metric=plan.metric,
        goal=plan.goal,
        seed=plan.seed,
        created_by=user,
    )
    trials = []
    for index, overrides in enumerate(plan.trials, 1):
        try:
            run = run_create(
                pipeline=pipeline, user=user, version=version, name=f"{plan.name} #{index}", overrides=overrides
            )
        except RunError as exc:  # the datasets changed since the check; the transaction undoes the others
            raise SweepError({f"trials.{index}": f"trial {index}: {exc}"}) from None
        trials.append(SweepTrial(sweep=sweep, run=run, index=index, params=overrides))
    SweepTrial.objects.bulk_create(trials)
    audit(
        team=pipeline.team,
        user=user,
        action="sweep.created",
        target=plan.name,
        runs=len(trials),
        pipeline=pipeline.name,
        version=version.number,
    )
    return sweep
