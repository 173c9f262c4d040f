"""Tables for refinery.schedules.windows: fire times, due windows, catch-up, overlap decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from refinery.schedules.windows import WindowError, cron_check, decide, due_windows, next_fire_times, zone


def U(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def sched(**kw):
    base = dict(
        trigger="interval",
        cron="",
        timezone="UTC",
        interval_seconds=3600,
        debounce_seconds=60,
        start_at=None,
        end_at=None,
        max_runs=None,
        catch_up="latest",
        catch_up_limit=10,
        paused=False,
        resumed_at=None,
        created_at=U(2026, 1, 1),
    )
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.mark.parametrize(
    "cron, tz, after, expected",
    [
        # Nightly at 02:00 Paris in winter (UTC+1) and summer (UTC+2).
        ("0 2 * * *", "Europe/Paris", U(2026, 12, 4, 12), [U(2026, 12, 5, 1), U(2026, 12, 6, 1), U(2026, 12, 7, 1)]),
        ("0 2 * * *", "Europe/Paris", U(2026, 7, 1, 12), [U(2026, 7, 2, 0), U(2026, 7, 3, 0), U(2026, 7, 4, 0)]),
        # Spring forward (29 March 2026, 02:00 -> 03:00 in Paris): 02:30 does not exist; it fires at the end of
        # the gap (03:00 CEST = 01:00 UTC), then normally.
        (
            "30 2 * * *",
            "Europe/Paris",
            U(2026, 3, 28, 12),
            [U(2026, 3, 29, 1), U(2026, 3, 30, 0, 30), U(2026, 3, 31, 0, 30)],
        ),
        # Every 30 minutes across the gap: 01:30 CET, then 03:00 CEST once (02:00 and 02:30 fold into it).
        (
            "*/30 * * * *",
            "Europe/Paris",
            U(2026, 3, 29, 0, 15),
            [U(2026, 3, 29, 0, 30), U(2026, 3, 29, 1), U(2026, 3, 29, 1, 30)],
        ),
        # Fall back (25 October 2026, 03:00 -> 02:00): 02:30 happens twice and fires once (the first).
        (
            "30 2 * * *",
            "Europe/Paris",
            U(2026, 10, 24, 12),
            [U(2026, 10, 25, 0, 30), U(2026, 10, 26, 1, 30), U(2026, 10, 27, 1, 30)],
        ),
        # New York, weekdays at 09:00.
        (
            "0 9 * * 1-5",
            "America/New_York",
            U(2026, 12, 4, 15),
            [U(2026, 12, 7, 14), U(2026, 12, 8, 14), U(2026, 12, 9, 14)],
        ),
        # Strictly after: a window exactly at `after` is not repeated.
        ("0 * * * *", "UTC", U(2026, 1, 1, 5), [U(2026, 1, 1, 6), U(2026, 1, 1, 7), U(2026, 1, 1, 8)]),
    ],
)
def test_cron_next_fire_times(cron, tz, after, expected):
    assert next_fire_times(sched(trigger="cron", cron=cron, timezone=tz), after=after) == expected


@pytest.mark.parametrize(
    "kw, after, expected",
    [
        ({"interval_seconds": 3600}, U(2026, 1, 1, 0, 30), [U(2026, 1, 1, 1), U(2026, 1, 1, 2), U(2026, 1, 1, 3)]),
        ({"interval_seconds": 3600}, U(2026, 1, 1, 1), [U(2026, 1, 1, 2), U(2026, 1, 1, 3), U(2026, 1, 1, 4)]),
        # Anchored at start_at; nothing before it.
        (
            {"interval_seconds": 600, "start_at": U(2026, 2, 1, 0, 5)},
            U(2026, 1, 5),
            [U(2026, 2, 1, 0, 5), U(2026, 2, 1, 0, 15), U(2026, 2, 1, 0, 25)],
        ),
        # end_at cuts the list.
        (
            {"interval_seconds": 3600, "end_at": U(2026, 1, 1, 2)},
            U(2026, 1, 1, 0, 30),
            [U(2026, 1, 1, 1), U(2026, 1, 1, 2)],
        ),
        ({"trigger": "dataset"}, U(2026, 1, 1), []),
    ],
)
def test_interval_next_fire_times(kw, after, expected):
    assert next_fire_times(sched(**kw), after=after) == expected


@pytest.mark.parametrize(
    "kw, now, last, fired, expected",
    [
        # Nothing handled yet, two hours in: the latest window only (catch-up "latest").
        ({}, U(2026, 1, 1, 2, 30), None, 0, [U(2026, 1, 1, 2)]),
        # Exactly on a window.
        ({}, U(2026, 1, 1, 2), U(2026, 1, 1, 1), 0, [U(2026, 1, 1, 2)]),
        # Already handled.
        ({}, U(2026, 1, 1, 2, 59), U(2026, 1, 1, 2), 0, []),
        # Beat stopped for 5 hours: latest only by default...
        ({}, U(2026, 1, 1, 7, 10), U(2026, 1, 1, 2), 0, [U(2026, 1, 1, 7)]),
        # ...every missed window with "all"...
        ({"catch_up": "all"}, U(2026, 1, 1, 7, 10), U(2026, 1, 1, 2), 0, [U(2026, 1, 1, h) for h in (3, 4, 5, 6, 7)]),
        # ...up to the limit (the latest ones).
        (
            {"catch_up": "all", "catch_up_limit": 2},
            U(2026, 1, 1, 7, 10),
            U(2026, 1, 1, 2),
            0,
            [U(2026, 1, 1, 6), U(2026, 1, 1, 7)],
        ),
        # Resumed at 07:05 after a pause since 02:00: nothing before the resume time, even with "all".
        ({"catch_up": "all", "resumed_at": U(2026, 1, 1, 7, 5)}, U(2026, 1, 1, 7, 10), U(2026, 1, 1, 2), 0, []),
        (
            {"catch_up": "all", "resumed_at": U(2026, 1, 1, 7, 5)},
            U(2026, 1, 1, 8, 1),
            U(2026, 1, 1, 2),
            0,
            [U(2026, 1, 1, 8)],
        ),
        # Paused: nothing.
        ({"paused": True}, U(2026, 1, 1, 7, 10), None, 0, []),
        # start_at in the future: nothing yet; then from it.
        ({"start_at": U(2026, 1, 2)}, U(2026, 1, 1, 7, 10), None, 0, []),
        (
            {"start_at": U(2026, 1, 2), "catch_up": "all"},
            U(2026, 1, 2, 1, 30),
            None,
            0,
            [U(2026, 1, 2), U(2026, 1, 2, 1)],
        ),
        # end_at: windows after it never come.
        ({"end_at": U(2026, 1, 1, 3)}, U(2026, 1, 1, 9), U(2026, 1, 1, 2), 0, [U(2026, 1, 1, 3)]),
        ({"end_at": U(2026, 1, 1, 3)}, U(2026, 1, 1, 9), U(2026, 1, 1, 3), 0, []),
        # max_runs counts the windows already fired.
        (
            {"max_runs": 3, "catch_up": "all"},
            U(2026, 1, 1, 7, 10),
            U(2026, 1, 1, 2),
            1,
            [U(2026, 1, 1, 6), U(2026, 1, 1, 7)],
        ),
        ({"max_runs": 3}, U(2026, 1, 1, 7, 10), U(2026, 1, 1, 2), 3, []),
        # Created mid-way: no window from before its creation.
        (
            {"created_at": U(2026, 1, 1, 5, 30), "catch_up": "all", "trigger": "cron", "cron": "0 * * * *"},
            U(2026, 1, 1, 7, 10),
            None,
            0,
            [U(2026, 1, 1, 6), U(2026, 1, 1, 7)],
        ),
        # An interval counts from its creation (or start_at): the first window is the creation instant.
        (
            {"created_at": U(2026, 1, 1, 5, 30), "catch_up": "all"},
            U(2026, 1, 1, 7, 10),
            None,
            0,
            [U(2026, 1, 1, 5, 30), U(2026, 1, 1, 6, 30)],
        ),
        # Cron in a time zone after a stopped beat: latest missed 02:00 Paris.
        (
            {"trigger": "cron", "cron": "0 2 * * *", "timezone": "Europe/Paris"},
            U(2026, 12, 7, 9),
            U(2026, 12, 4, 1),
            0,
            [U(2026, 12, 7, 1)],
        ),
        (
            {"trigger": "cron", "cron": "0 2 * * *", "timezone": "Europe/Paris", "catch_up": "all"},
            U(2026, 12, 7, 9),
            U(2026, 12, 4, 1),
            0,
            [U(2026, 12, 5, 1), U(2026, 12, 6, 1), U(2026, 12, 7, 1)],
        ),
    ],
)
def test_due_windows(kw, now, last, fired, expected):
    assert due_windows(sched(**kw), now, last, fired=fired) == expected


@pytest.mark.parametrize(
    "newest, now, last, expected",
    [
        (None, U(2026, 1, 5), None, []),
        # A version uploaded before the schedule existed does not fire it.
        (U(2025, 12, 31), U(2026, 1, 5), None, []),
        # Uploaded at 10:00 with a 60 s debounce: due from 10:01, not before.
        (U(2026, 1, 5, 10), U(2026, 1, 5, 10, 0, 59), None, []),
        (U(2026, 1, 5, 10), U(2026, 1, 5, 10, 1), None, [U(2026, 1, 5, 10, 1)]),
        # A second upload at 10:00:30 moves the window: one window for both.
        (U(2026, 1, 5, 10, 0, 30), U(2026, 1, 5, 10, 1), None, []),
        (U(2026, 1, 5, 10, 0, 30), U(2026, 1, 5, 10, 2), None, [U(2026, 1, 5, 10, 1, 30)]),
        # Already handled.
        (U(2026, 1, 5, 10), U(2026, 1, 5, 11), U(2026, 1, 5, 10, 1), []),
    ],
)
def test_dataset_windows(newest, now, last, expected):
    assert due_windows(sched(trigger="dataset"), now, last, newest_data_at=newest) == expected


def test_cron_window_walk_has_no_duplicates_across_dst_in_catch_up():
    s = sched(trigger="cron", cron="*/30 * * * *", timezone="Europe/Paris", catch_up="all", catch_up_limit=100)
    windows = due_windows(s, U(2026, 3, 29, 2), U(2026, 3, 28, 23))
    assert windows == sorted(set(windows))
    assert U(2026, 3, 29, 1) in windows and len(windows) == 6  # 00:30 01:00 01:30 (CET) 03:00 03:30 04:00 (CEST)


def _run(number=4, status="running"):
    return SimpleNamespace(number=number, status=status)


@pytest.mark.parametrize(
    "policy, active, waiting, action",
    [
        ("skip", None, False, "fire"),
        ("queue", None, False, "fire"),
        ("replace", None, False, "fire"),
        ("skip", _run(), False, "skip"),
        ("queue", _run(), False, "queue"),
        ("queue", _run(), True, "skip"),
        ("replace", _run(), False, "replace"),
    ],
)
def test_decide(policy, active, waiting, action):
    decision = decide(policy, active, waiting=waiting)
    assert decision.action == action
    if active is not None:
        assert "#4" in decision.reason


@pytest.mark.parametrize("bad", ["", "* * *", "61 * * * *", "0 2 * * * *", "every day"])
def test_cron_check_refuses(bad):
    with pytest.raises(WindowError):
        cron_check(bad)


def test_zone_refuses_unknown():
    with pytest.raises(WindowError, match="Mars/Olympus"):
        zone("Mars/Olympus")
    assert zone("Europe/Paris").key == "Europe/Paris"
