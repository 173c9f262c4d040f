"""`python -m trainers methods --json` is what the web form and the API schema are built from: its bytes are
pinned, so a refactoring of the configs (or the registry) that changes a field, its order or its help shows here.

After an intended change, regenerate the snapshot and review the diff:
    python -m trainers methods --json > tests/trainers/snapshots/methods.json
"""

import os

from trainers.cli import main

SNAPSHOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "snapshots", "methods.json")


def test_methods_json_is_byte_identical_to_the_snapshot(capsys):
    assert main(["methods", "--json"]) == 0
    printed = capsys.readouterr().out
    with open(SNAPSHOT, encoding="utf-8") as fh:
        expected = fh.read()
    assert printed == expected, "the methods JSON changed; see this module's docstring"
