"""The event stream decoded (trainers.events.decode): what the writer sends comes back typed, and what is
not an event is refused."""

import dataclasses
import io
import json

import pytest
from trainers.events import (
    EVENT_TYPES,
    Artifact,
    BadEvent,
    Canceled,
    Checkpoint,
    EventWriter,
    Failed,
    Finished,
    Metrics,
    Progress,
    Started,
    decode,
)


def _round_trip(event: str, **fields):
    stream = io.StringIO()
    EventWriter(stream).emit(event, **fields)
    return decode(stream.getvalue())


def test_every_event_type_round_trips_through_the_writer():
    started = _round_trip(
        "started", total_steps=10, trainable_params=5, total_params=9, step=4, resumed_from="/ck/checkpoint-4"
    )
    assert isinstance(started, Started) and isinstance(started.time, float)
    assert (
        started.step,
        started.total_steps,
        started.trainable_params,
        started.total_params,
        started.resumed_from,
    ) == (4, 10, 5, 9, "/ck/checkpoint-4")
    assert _untimed(_round_trip("progress", step=3, total_steps=10, epoch=0.5)) == Progress(
        step=3, total_steps=10, epoch=0.5
    )
    metrics = _round_trip(
        "metrics", step=2, metrics={"train/loss": 1.5, "n": 3, "nan": float("nan"), "flag": True, "text": "x"}
    )
    assert isinstance(metrics, Metrics) and metrics.step == 2
    assert metrics.metrics == {"train/loss": 1.5, "n": 3.0}  # NaN (sent as null), booleans and text are no points
    assert _untimed(_round_trip("checkpoint", step=5, path="/ck/5")) == Checkpoint(step=5, path="/ck/5")
    artifact = _round_trip("artifact", name="model", path="/out/model")
    assert isinstance(artifact, Artifact) and (artifact.artifact, artifact.path) == ("model", "/out/model")
    finished = _round_trip("finished", outputs={"kind": "model", "path": "/out/model"}, summary={"train/loss": 1.0})
    assert isinstance(finished, Finished) and finished.outputs["kind"] == "model"
    assert finished.summary == {"train/loss": 1.0}
    assert _round_trip("canceled", step=7).step == 7 and isinstance(_round_trip("canceled"), Canceled)
    failed = _round_trip("failed", error="boom", traceback="Traceback ...")
    assert isinstance(failed, Failed) and (failed.error, failed.traceback) == ("boom", "Traceback ...")
    assert {type(_round_trip(name)).name for name in EVENT_TYPES} == set(EVENT_TYPES)


def _untimed(event):
    return dataclasses.replace(event, time=None)


def test_missing_fields_take_their_defaults():
    assert decode('{"event": "progress"}') == Progress()
    assert decode('{"event": "metrics", "time": 1.5}') == Metrics(time=1.5, step=0, metrics={})
    assert decode('{"event": "started", "resumed_from": null}') == Started()
    assert decode('{"event": "finished", "outputs": null}') == Finished()
    assert decode('{"event": "progress", "step": 3.0}').step == 3


@pytest.mark.parametrize(
    "line",
    [
        "Loading checkpoint shards: 100%",  # a library printing to stdout
        "[1, 2]",
        '"metrics"',
        json.dumps({"step": 3}),  # no event
        json.dumps({"event": "exploded"}),
        json.dumps({"event": "metrics", "step": "three"}),
        json.dumps({"event": "metrics", "step": True}),
        json.dumps({"event": "metrics", "metrics": [1, 2]}),
        json.dumps({"event": "progress", "epoch": "1"}),
        json.dumps({"event": "finished", "outputs": "model"}),
        json.dumps({"event": "started", "time": "now"}),
    ],
)
def test_what_is_not_an_event_is_refused(line):
    with pytest.raises(BadEvent):
        decode(line)
