"""Issue 11, hole 6: an adapter trained on top of another stage's adapter is refused when the pipeline is
saved (through the service, the editor and the API alike), naming the stage and the fix; nothing is saved.
The shapes that work stay accepted: full fine-tuning then an adapter, an adapter merged by an export stage
then another adapter, and evaluate/export/merge on adapters."""

from __future__ import annotations

import html
import json

import pytest

from refinery.basemodels.services import base_model_create
from refinery.data.services import dataset_version_create
from refinery.pipelines.models import Pipeline
from refinery.pipelines.services import pipeline_create
from refinery.pipelines.specs import SpecError, pipeline_spec_normalize
from tests.fixtures import ROWS

STACKED = "stage 2 (dpo): its input 'sft' is a LoRA adapter; training another adapter on top of it is not supported"


def _dataset(team, user, name, kind, rows):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    return dataset_version_create(
        team=team, user=user, name=name, kind=kind, filename=f"{name}.jsonl", chunks=iter([data])
    ).version.dataset


@pytest.fixture
def seeded(team, alice, dataset_dir, tiny_model_dir):
    return {
        "sums": _dataset(team, alice, "sums", "prompt_completion", ROWS),
        "prefs": _dataset(team, alice, "prefs", "preference", [{"prompt": "1+1=", "chosen": "2", "rejected": "3"}]),
        "model": base_model_create(
            team=team, user=alice, name="tiny", source="local", name_or_path=str(tiny_model_dir)
        ),
    }


def _spec(seeded, first="lora", second="lora", between=None):
    stages = [{"name": "sft", "method": "sft", "dataset_id": seeded["sums"].pk, "adapter": {"type": first}}]
    source = "sft"
    if between == "export":
        stages.append({"name": "merged", "method": "export", "input": "sft", "config": {"quantization": "none"}})
        source = "merged"
    stages.append(
        {"name": "dpo", "method": "dpo", "input": source, "dataset_id": seeded["prefs"].pk, "adapter": {"type": second}}
    )
    return {"stages": stages}


@pytest.mark.parametrize(
    "first,second",
    [("lora", "lora"), ("lora", "dora"), ("dora", "ia3"), ("ia3", "lora"), ("qlora", "lora"), ("layernorm", "lora")],
)
def test_an_adapter_on_an_adapter_is_refused_by_the_service(team, seeded, first, second):
    with pytest.raises(SpecError) as caught:
        pipeline_spec_normalize(team=team, spec=_spec(seeded, first, second), base_model=seeded["model"])
    message = caught.value.errors["stages.1.adapter.type"]
    assert message.startswith("stage 2 (dpo): its input 'sft' is a ")
    assert "training another adapter on top of it is not supported" in message
    assert "train 'sft' with full fine-tuning" in message and "export stage" in message


@pytest.mark.parametrize(
    "first,second,between",
    [
        ("none", "lora", None),  # full SFT, then a LoRA DPO
        ("lora", "none", None),  # a LoRA SFT, then full DPO (the trainer merges the input adapter first)
        ("freeze", "lora", None),  # selective tuning outputs a whole model
        ("freeze", "dora", None),
        ("lora", "lora", "export"),  # the export stage merges the adapter into its base: a whole model
    ],
)
def test_what_the_trainer_can_load_stays_accepted(team, seeded, first, second, between):
    spec = pipeline_spec_normalize(team=team, spec=_spec(seeded, first, second, between), base_model=seeded["model"])
    assert [s["name"] for s in spec["stages"]] == (["sft", "merged", "dpo"] if between else ["sft", "dpo"])
    assert [(s["adapter"] or {}).get("type") for s in spec["stages"]][-1] == second


def test_evaluate_export_and_merge_on_adapters_stay_accepted(team, seeded):
    ds = seeded["sums"].pk
    spec = {
        "stages": [
            {"name": "a", "method": "sft", "dataset_id": ds, "adapter": {"type": "lora"}},
            {"name": "b", "method": "sft", "dataset_id": ds, "adapter": {"type": "dora"}},
            {"name": "check", "method": "evaluate", "input": "a", "dataset_id": ds},
            {"name": "ship", "method": "export", "input": "a", "config": {"quantization": "none"}},
            {"name": "soup", "method": "merge", "inputs": ["a", "b"]},
            {"name": "polish", "method": "sft", "input": "soup", "dataset_id": ds, "adapter": {"type": "lora"}},
        ]
    }
    normalized = pipeline_spec_normalize(team=team, spec=spec, base_model=seeded["model"])
    assert [s["name"] for s in normalized["stages"]] == ["a", "b", "check", "ship", "soup", "polish"]


def test_pipeline_create_refuses_it_and_saves_nothing(team, alice, seeded):
    with pytest.raises(SpecError, match="training another adapter on top of it is not supported"):
        pipeline_create(team=team, user=alice, name="stacked", base_model_id=seeded["model"].pk, spec=_spec(seeded))
    assert not Pipeline.objects.exists()


def test_the_editor_refuses_it_naming_the_stage_and_the_fix(browser_client, seeded):
    form = {
        "name": "stacked",
        "base_model_id": seeded["model"].pk,
        "seed": "1",
        "description": "",
        "stages-0-name": "sft",
        "stages-0-method": "sft",
        "stages-0-input": "base",
        "stages-0-dataset_id": seeded["sums"].pk,
        "stages-0-adapter-type": "lora",
        "stages-1-name": "dpo",
        "stages-1-method": "dpo",
        "stages-1-input": "@0",
        "stages-1-dataset_id": seeded["prefs"].pk,
        "stages-1-adapter-type": "lora",
    }
    response = browser_client.post("/pipelines/new/", form)
    assert response.status_code == 400
    text = html.unescape(response.content.decode())
    assert STACKED in text and "train 'sft' with full fine-tuning" in text
    assert not Pipeline.objects.exists()

    form["stages-0-adapter-type"] = "none"  # the first fix the message names
    response = browser_client.post("/pipelines/new/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert [s["adapter"]["type"] for s in Pipeline.objects.get(name="stacked").stages] == ["none", "lora"]


def test_the_api_refuses_it_with_the_message(api, seeded):
    payload = {"name": "stacked", "base_model_id": seeded["model"].pk, "spec": _spec(seeded)}
    response = api.post("/api/v1/pipelines", payload)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["errors"]["stages.1.adapter.type"].startswith(STACKED)
    assert STACKED in body["detail"]
    assert not Pipeline.objects.exists()

    payload["spec"] = _spec(seeded, between="export")  # the second fix: an export stage merges the adapter
    response = api.post("/api/v1/pipelines", payload)
    assert response.status_code == 201, response.content
