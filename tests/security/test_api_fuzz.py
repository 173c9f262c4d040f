"""Schema fuzzing of /api/v1: Schemathesis generates requests from the API's own OpenAPI schema (valid and
invalid bodies, query strings and path parameters) and sends them in-process to the Django WSGI app,
authenticated as a member of a team that owns a dataset, a base model, a pipeline and runs. No generated
request may answer 5xx.

Each operation is one test item (`test_api_fuzz[POST /api/v1/pipelines]`...), with a bounded, derandomized
number of examples. Every case is sent twice when it has path parameters: once as generated (mostly
unknown ids: the 404 path) and once with the ids of the team's real objects, so that generated bodies
reach the code behind the lookups (spec validation, run creation...).

The database is `transactional_db`: the team's rows are committed and each request commits on its own, as in
production: requests reach the app through its WSGI handler, with Django's own request signals (the test
client would switch off its end-of-request connection handling).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from refinery.api.views import api
from refinery.pipelines.services import pipeline_create
from refinery.runs.services import run_create
from refinery.teams.models import Membership
from refinery.teams.services import api_token_create, membership_add
from refinery.wsgi import application
from tests.factories import BaseModelFactory, DatasetVersionFactory, TeamFactory, UserFactory

schema = schemathesis.openapi.from_dict(api.get_openapi_schema())
schema.app = application  # calls go in-process through the WSGI handler

# Per operation. A deeper hunt: REFINERY_FUZZ_EXAMPLES=500 pytest tests/security/test_api_fuzz.py
MAX_EXAMPLES = int(os.environ.get("REFINERY_FUZZ_EXAMPLES", "25"))


@dataclass
class FuzzTeam:
    token: str
    path_ids: dict[str, int]  # a real object for each path parameter name of the API


def _build_team() -> FuzzTeam:
    owner, member = UserFactory(), UserFactory()
    team = TeamFactory(members=[owner])
    membership_add(team=team, user=member, role=Membership.Role.MEMBER)
    version = DatasetVersionFactory(dataset__team=team)
    base_model = BaseModelFactory(team=team)
    spec = {"seed": 5, "auto_evaluate": False, "stages": [
        {"name": "sft", "method": "sft", "dataset_id": version.dataset_id, "config": {"max_steps": 2},
         "adapter": {"type": "lora"}},
    ]}
    pipeline = pipeline_create(team=team, user=owner, name="fuzzed", base_model_id=base_model.pk, spec=spec)
    run = run_create(pipeline=pipeline, user=owner)
    _, token = api_token_create(user=member, team=team)
    return FuzzTeam(token=token, path_ids={"dataset_id": version.dataset_id, "pipeline_id": pipeline.pk,
                                           "number": run.number})


@pytest.fixture
def fuzz_team(transactional_db, sent_stages) -> FuzzTeam:
    """The team, committed: each request autocommits, as in production, so one failing request cannot poison
    the next. (A module-scoped team would save the flush per operation, but pytest-django creates the test
    database only for tests that ask for `db`/`transactional_db`.) Run wake-ups are recorded, not sent."""
    return _build_team()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_api_fuzz(case, fuzz_team):
    headers = {"Authorization": f"Bearer {fuzz_team.token}"}
    case.call_and_validate(headers=headers, checks=[not_a_server_error])
    if case.path_parameters:
        missing = set(case.path_parameters) - set(fuzz_team.path_ids)
        assert not missing, f"fuzz_team has no real object for the path parameters {sorted(missing)}: add one"
        case.path_parameters = {name: fuzz_team.path_ids[name] for name in case.path_parameters}
        case.call_and_validate(headers=headers, checks=[not_a_server_error])
