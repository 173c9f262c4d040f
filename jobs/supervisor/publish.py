"""What reaches MLflow at the end of a stage: its outputs (which the next stage reads), then the mirror:
copies of spec.json and trainer.log without host paths or global run ids, and the run status.

The database row is written first at the end of a stage and MLflow is brought in line after, so an
MLflow outage delays the mirror but never a cancel or the next stage's start (outputs are the
exception: the next stage needs them, so their upload is retried for OUTPUT_UPLOAD_SECONDS).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from trainers.events import Finished

from jobs.stage_inputs import StageSetupError, redact, redacted_spec
from jobs.supervisor.retrying import one_line, retrying
from refinery.runs.models import StageRun
from refinery.tracking import runs as tracking_runs
from refinery.tracking.client import artifacts_upload

log = logging.getLogger(__name__)

OUTPUT_UPLOAD_SECONDS = 300.0  # how long an MLflow outage may delay the upload of a finished stage's outputs


def outputs_upload(finished: Finished, *, stage_run_id: int, mlflow_run_id: str, client, input_ref: dict) -> dict:
    """Upload what the trainer produced (a model, an adapter or an evaluation report, plus any extra
    directories such as an export's quantized copy) and return the outputs a later stage reads."""
    produced = finished.outputs
    kind = produced.get("kind")
    path = Path(produced.get("path") or "")
    if kind not in ("model", "adapter", "report") or not path.is_dir():
        raise StageSetupError(f"the trainer reported no usable output ({kind!r} at {str(path)!r})")
    uploads = [(path, kind)] + [
        (Path(extra.get("path") or ""), str(extra.get("artifact_path") or "")) for extra in produced.get("extra") or []
    ]
    for local, artifact_path in uploads:
        if not local.is_dir() or not artifact_path or "/" in artifact_path or artifact_path.startswith("."):
            raise StageSetupError(
                f"the trainer reported an unusable extra output ({artifact_path!r} at {str(local)!r})"
            )
        retrying(
            lambda local=local, artifact_path=artifact_path: artifacts_upload(
                mlflow_run_id=mlflow_run_id, local_path=local, artifact_path=artifact_path, client=client
            ),
            what=f"stage {stage_run_id}: uploading the {artifact_path}",
            timeout=OUTPUT_UPLOAD_SECONDS,
        )
    outputs = {
        "kind": kind,
        "artifact_path": kind,
        "mlflow_run_id": mlflow_run_id,
        "base": input_ref if kind == "adapter" else None,
    }
    if len(uploads) > 1:
        outputs["extra"] = [artifact_path for _, artifact_path in uploads[1:]]
    return outputs


def mlflow_mirror(
    stage: StageRun,
    status: str,
    *,
    mlflow_run_id: str,
    client,
    spec_path: Path,
    spec: dict | None,
    log_path: Path,
    redactions: list[tuple[str, str]],
) -> None:
    """Best effort: the row is the source of truth (and has the log tail); MLflow is its mirror."""
    with tempfile.TemporaryDirectory(prefix="refinery-publish-") as tmp:
        for path in (spec_path, log_path):
            if not path.exists():
                continue
            try:
                # A copy without host paths or global run ids (the team sees its artifacts).
                public = Path(tmp) / path.name
                if path == spec_path:
                    public.write_text(
                        redacted_spec(spec if spec is not None else json.loads(path.read_text()), redactions)
                    )
                else:
                    with (
                        open(path, encoding="utf-8", errors="replace") as src,
                        open(public, "w", encoding="utf-8") as dst,
                    ):
                        for line in src:
                            dst.write(redact(line, redactions))
                artifacts_upload(mlflow_run_id=mlflow_run_id, local_path=public, client=client)
            except Exception as exc:  # noqa: BLE001 - best effort: the row has the log tail
                log.warning("stage %s: could not upload %s: %s", stage.pk, path.name, one_line(exc, 200))
    try:
        tracking_runs.mlflow_run_end(mlflow_run_id=mlflow_run_id, status=status, client=client)
        tracking_runs.pipeline_run_end(run=stage.run, client=client)
    except Exception as exc:  # noqa: BLE001 - the DB is the source of truth; MLflow status is a mirror
        log.warning("stage %s: could not set the MLflow run status: %s", stage.pk, one_line(exc, 200))
