"""Fixtures for the web side: a team with a user, the demo kit's files, an API client.

tests/conftest.py imports the fixtures, so every test folder sees them; tests import the plain names
(ROWS, write_jsonl, ApiClient) from here."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from django.test import Client

from refinery.teams.models import Membership
from refinery.teams.services import api_token_create, membership_add, user_create

ROWS = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(10) for b in range(10)]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def dataset_dir(tmp_path, settings):
    settings.VAR_DIR = tmp_path / "var"
    settings.REFINERY_DATASET_DIR = tmp_path / "var" / "datasets"
    return settings.REFINERY_DATASET_DIR


@pytest.fixture
def alice(db):
    return user_create(username="alice", password="pw-alice-123", team_name="Alpha")


@pytest.fixture
def bob(db):
    return user_create(username="bob", password="pw-bob-123", team_name="Beta")


@pytest.fixture
def team(alice):
    return alice.teams.get()


@pytest.fixture
def viewer(team):
    user = user_create(username="victor", password="pw-victor-123")
    membership_add(team=team, user=user, role=Membership.Role.VIEWER)
    return user


@pytest.fixture
def browser_client(alice) -> Client:
    client = Client()
    assert client.login(username="alice", password="pw-alice-123")
    return client


class ApiClient:
    def __init__(self, key: str):
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {key}"}

    def get(self, url, **kw):
        return self.client.get(url, headers=self.headers, **kw)

    def post(self, url, data=None, **kw):
        if "files" in kw:
            files = kw.pop("files")
            return self.client.post(url, {**(data or {}), **files}, headers=self.headers)
        return self.client.post(url, json.dumps(data or {}), content_type="application/json", headers=self.headers)

    def put(self, url, data=None):
        return self.client.put(url, json.dumps(data or {}), content_type="application/json", headers=self.headers)


@pytest.fixture
def api(alice, team) -> ApiClient:
    _, key = api_token_create(user=alice, team=team)
    return ApiClient(key)


@pytest.fixture
def bob_api(bob) -> ApiClient:
    _, key = api_token_create(user=bob)
    return ApiClient(key)


@pytest.fixture
def tiny_model_dir(_isolated_paths) -> Path:
    """A model folder as the web side sees it: config, tokenizer config with a chat template (in the
    session's shared model root, so that any team may register it)."""
    from tests.conftest import SHARED_MODELS

    folder = _isolated_paths / SHARED_MODELS / secrets.token_hex(4) / "tiny-model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 2})
    )
    # A safetensors header (8-byte length + JSON) naming a bias-free 2-layer model's tensors.
    header = {
        f"model.layers.{i}.{n}.weight": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 0]}
        for i in range(2)
        for n in ("self_attn.q_proj", "mlp.up_proj", "input_layernorm")
    }
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw)
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
            }
        )
    )
    return folder
