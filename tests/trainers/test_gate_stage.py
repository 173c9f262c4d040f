"""The promotion gate: its decision (pure arithmetic, every condition and edge) and the gate stage run
in-process on the tiny demo model: a trained candidate beats an untrained champion, the reverse is kept out,
and with no champion the absolute thresholds decide. The gate measures exactly as the evaluate stage does."""

import json
import os

import pytest
from trainers import cancel
from trainers.catalog import validate_stage
from trainers.configs import GateConfig
from trainers.events import EventLog
from trainers.gates import GateDataError, gate_decide
from trainers.stage import EXIT_FAILED, execute


def _cfg(**kw) -> GateConfig:
    config, _, errors = validate_stage("gate", {"registered_model": "bot", **kw}, None, "reference")
    assert not errors, errors
    return config


def _metrics(cand, champ, r_cand=None, r_champ=None, metric="accuracy", r_metric="loss"):
    m = {f"eval/{metric}": cand, f"baseline/{metric}": champ}
    if r_cand is not None:
        m[f"retention/{r_metric}"] = r_cand
        m[f"retention_baseline/{r_metric}"] = r_champ
    return m


# --- the decision -------------------------------------------------------------------------------------------


def test_gain_must_be_positive_and_at_least_d_absolute_and_relative():
    def decide(cfg, candidate, champion):
        return gate_decide(
            cfg, metrics=_metrics(candidate, champion), target_kind="reference", retention_kind=None, has_champion=True
        )

    assert decide(_cfg(), 0.83, 0.81)["passed"]
    tie = decide(_cfg(), 0.81, 0.81)
    assert not tie["passed"] and tie["gain"] == 0 and "needs > 0" in tie["reasons"][0]
    assert not decide(_cfg(min_gain=0.05), 0.83, 0.81)["passed"]
    assert decide(_cfg(min_gain=0.02), 0.83, 0.81)["passed"]  # exactly D passes
    rel = decide(_cfg(min_gain=0.03, gain_mode="relative"), 0.83, 0.80)  # +3.75%
    assert rel["passed"] and rel["relative_gain"] == pytest.approx(0.0375)
    assert not decide(_cfg(min_gain=0.05, gain_mode="relative"), 0.83, 0.80)["passed"]
    zero = decide(_cfg(min_gain=0.5, gain_mode="relative"), 0.1, 0.0)  # from 0: any gain is infinite
    assert zero["passed"] and zero["relative_gain"] is None


def test_lower_is_better_metrics_gain_when_they_fall():
    cfg = _cfg()
    better = gate_decide(
        cfg,
        metrics=_metrics(0.4, 0.5, metric="loss"),
        target_kind="prompt_completion",
        retention_kind=None,
        has_champion=True,
    )
    assert better["passed"] and better["gain"] == pytest.approx(0.1) and better["higher_is_better"] is False
    worse = gate_decide(
        cfg,
        metrics=_metrics(0.6, 0.5, metric="loss"),
        target_kind="prompt_completion",
        retention_kind=None,
        has_champion=True,
    )
    assert not worse["passed"] and worse["reasons"] == ["loss 0.6 vs 0.5 (-0.1; needs > 0)"]


def test_a_candidate_that_gains_but_forgets_past_r_is_refused():
    cfg = _cfg(max_forgetting="0.2")
    forgot = gate_decide(
        cfg,
        metrics=_metrics(0.83, 0.81, 0.9, 0.5),
        target_kind="reference",
        retention_kind="prompt_completion",
        has_champion=True,
    )
    assert not forgot["passed"] and forgot["forgetting"] == pytest.approx(0.4)
    assert forgot["reasons"] == ["retention drop 0.4 (limit 0.2; retention loss 0.9 vs 0.5)"]
    kept = gate_decide(
        cfg,
        metrics=_metrics(0.83, 0.81, 0.6, 0.5),
        target_kind="reference",
        retention_kind="prompt_completion",
        has_champion=True,
    )
    assert kept["passed"] and kept["forgetting"] == pytest.approx(0.1)
    # Without R the drop is still measured (for the record), not judged.
    info = gate_decide(
        _cfg(),
        metrics=_metrics(0.83, 0.81, 0.9, 0.5),
        target_kind="reference",
        retention_kind="prompt_completion",
        has_champion=True,
    )
    assert info["passed"] and info["forgetting"] == pytest.approx(0.4)


def test_absolute_thresholds_apply_with_a_champion_and_alone_without_one():
    cfg = _cfg(target_threshold="0.9", retention_threshold="0.7")
    with_champion = gate_decide(
        cfg,
        metrics=_metrics(0.83, 0.81, 0.6, 0.5),
        target_kind="reference",
        retention_kind="prompt_completion",
        has_champion=True,
    )
    assert not with_champion["passed"]
    assert with_champion["reasons"] == ["accuracy 0.83 (needs >= 0.9)"]
    first = gate_decide(
        cfg,
        metrics={"eval/accuracy": 0.95, "retention/loss": 0.6},
        target_kind="reference",
        retention_kind="prompt_completion",
        has_champion=False,
    )
    assert first["passed"] and first["champion"] is None and first["gain"] is None
    assert [c["check"] for c in first["checks"]] == ["first", "target_threshold", "retention_threshold"]
    low = gate_decide(
        cfg,
        metrics={"eval/accuracy": 0.95, "retention/loss": 0.8},
        target_kind="reference",
        retention_kind="prompt_completion",
        has_champion=False,
    )
    assert not low["passed"] and low["reasons"] == ["retention loss 0.8 (needs <= 0.7)"]
    anything = gate_decide(
        _cfg(), metrics={"eval/accuracy": 0.1}, target_kind="reference", retention_kind=None, has_champion=False
    )
    assert anything["passed"] and "first candidate passes" in anything["reasons"][0]


def test_missing_numbers_and_settings_are_refused_clearly():
    with pytest.raises(GateDataError, match="no retention set"):
        gate_decide(
            _cfg(max_forgetting="0.1"),
            metrics=_metrics(0.9, 0.8),
            target_kind="reference",
            retention_kind=None,
            has_champion=True,
        )
    with pytest.raises(GateDataError, match="'baseline/accuracy'"):
        gate_decide(
            _cfg(), metrics={"eval/accuracy": 0.9}, target_kind="reference", retention_kind=None, has_champion=True
        )
    _, _, errors = validate_stage("gate", {"max_forgetting": "-1", "target_threshold": "high"}, None, "chat")
    assert errors["config.registered_model"].startswith("registered_model: name the registered model")
    assert "must be 0 or more" in errors["config.max_forgetting"]
    assert "must be a number or empty, got 'high'" in errors["config.target_threshold"]
    _, _, errors = validate_stage("gate", {"registered_model": "bot", "metric": "accuracy"}, None, "chat")
    assert errors == {"config.metric": "metric: chat data gives loss, perplexity, not 'accuracy'"}
    _, _, errors = validate_stage("gate", {"registered_model": "bot"}, None, "feedback")
    assert "gate cannot read 'feedback' data" in errors["dataset_kind"]


# --- the stage, in-process ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_pending_cancel():
    cancel.reset()
    yield
    cancel.reset()


def _run(spec) -> EventLog:
    log = EventLog()
    code = execute(spec, log)
    failed = log.of("failed")
    assert not failed, failed[0]["traceback"] if failed else ""
    assert code == 0
    return log


def _finished(log):
    return log.of("finished")[0]


@pytest.fixture(scope="module")
def trained(demo_kit, tmp_path_factory) -> str:
    """The demo model after a quick full SFT on addition: it knows addition better than the random model."""
    out = tmp_path_factory.mktemp("trained")
    _run(
        {
            "method": "sft",
            "config": {"save_steps": 1000, "per_device_train_batch_size": 32, "max_steps": 60},
            "adapter": {"type": "none"},
            "model": {"name_or_path": demo_kit["model"]},
            "data": {"train": {"path": demo_kit["data"]["train"], "kind": "prompt_completion"}},
            "output_dir": str(out),
            "checkpoint_dir": str(out / "ckpt"),
            "seed": 42,
        }
    )
    return str(out / "model")


def _gate_spec(out, candidate, *, champion=None, base=None, config=None, kit=None, retention=True):
    aux = {}
    if champion:
        aux["champion"] = {"name_or_path": champion}
    if base:
        aux["base"] = {"name_or_path": base}
    data = {"eval": {"path": kit["data"]["eval"], "kind": "prompt_completion"}}
    if retention:
        data["retention"] = {"path": kit["data"]["train"], "kind": "prompt_completion"}
    return {
        "method": "gate",
        "config": {"registered_model": "adder", "sample_count": 2, **(config or {})},
        "model": {"name_or_path": candidate},
        "data": data,
        "aux_models": aux,
        "output_dir": str(out),
        "checkpoint_dir": str(out / "ckpt"),
        "seed": 42,
    }


def test_a_trained_candidate_beats_an_untrained_champion_with_the_evaluate_stages_numbers(trained, demo_kit, tmp_path):
    log = _run(
        _gate_spec(
            tmp_path / "gate", trained, champion=demo_kit["model"], kit=demo_kit, config={"max_forgetting": "0.5"}
        )
    )
    summary = _finished(log)["summary"]
    gate = summary["gate"]
    assert gate["passed"] and gate["has_champion"] and gate["metric"] == "loss"
    assert gate["candidate"] < gate["champion"] and gate["gain"] > 0.5
    assert gate["forgetting"] < 0  # it improved on the retention set too
    assert summary["metrics"]["gate/passed"] == 1.0 and summary["metrics"]["gate/gain"] == gate["gain"]
    report = os.path.join(_finished(log)["outputs"]["path"])
    saved = json.loads(open(os.path.join(report, "gate.json")).read())
    assert saved["decision"] == gate and saved["champion"]["name_or_path"] == demo_kit["model"]

    # The same two models through an evaluate stage give the same numbers (one measuring library).
    evaluate = _run(
        {
            "method": "evaluate",
            "config": {"sample_count": 0},
            "model": {"name_or_path": trained},
            "data": {
                "eval": {"path": demo_kit["data"]["eval"], "kind": "prompt_completion"},
                "retention": {"path": demo_kit["data"]["train"], "kind": "prompt_completion"},
            },
            "aux_models": {"baseline": {"name_or_path": demo_kit["model"]}},
            "output_dir": str(tmp_path / "eval"),
            "checkpoint_dir": str(tmp_path / "eval" / "c"),
            "seed": 42,
        }
    )
    measured = _finished(evaluate)["summary"]
    assert measured["target"]["gain"] == pytest.approx(gate["gain"], abs=1e-9)
    assert measured["retention"]["forgetting"] == pytest.approx(gate["forgetting"], abs=1e-9)


def test_a_worse_candidate_is_kept_out_and_says_why(trained, demo_kit, tmp_path):
    log = _run(
        _gate_spec(
            tmp_path / "gate", demo_kit["model"], champion=trained, kit=demo_kit, config={"max_forgetting": "0.1"}
        )
    )
    gate = _finished(log)["summary"]["gate"]
    assert not gate["passed"] and gate["gain"] < 0 and gate["forgetting"] > 0.1
    assert [c["check"] for c in gate["checks"] if not c["passed"]] == ["gain", "forgetting"]
    assert gate["reasons"][0].startswith("loss ") and "needs > 0" in gate["reasons"][0]


def test_with_no_champion_the_base_model_is_measured_and_thresholds_decide(trained, demo_kit, tmp_path):
    lenient = _run(
        _gate_spec(tmp_path / "a", trained, base=demo_kit["model"], kit=demo_kit, config={"target_threshold": "100"})
    )
    gate = _finished(lenient)["summary"]["gate"]
    assert gate["passed"] and not gate["has_champion"] and gate["champion"] is None
    assert _finished(lenient)["summary"]["target"]["baseline"] > gate["candidate"]  # the base, for information
    strict = _run(
        _gate_spec(tmp_path / "b", trained, base=demo_kit["model"], kit=demo_kit, config={"target_threshold": "0.0001"})
    )
    assert not _finished(strict)["summary"]["gate"]["passed"]


def test_a_gate_without_a_model_to_compare_or_held_out_data_fails_before_loading(demo_kit, tmp_path):
    log = EventLog()
    assert execute(_gate_spec(tmp_path / "a", demo_kit["model"], kit=demo_kit), log) == EXIT_FAILED
    assert "aux_models.champion" in log.of("failed")[0]["error"]
    spec = _gate_spec(
        tmp_path / "b",
        demo_kit["model"],
        champion=demo_kit["model"],
        kit=demo_kit,
        retention=False,
        config={"max_forgetting": "0.1"},
    )
    log = EventLog()
    assert execute(spec, log) == EXIT_FAILED
    assert "no retention set" in log.of("failed")[0]["error"]
