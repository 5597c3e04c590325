"""Group commit (gridgov.store.group_commit): the Idempotency-Key claims and answers that
threads of one process ask for together share a transaction, and each thread still gets its
own result, on both backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, event, select

from gridgov import store
from gridgov.store.group_commit import Group
from gridgov.store.models import IDEMPOTENCY

THREADS = 16


def _held_first_run(group_runs: list[list[int]], fail_on: int | None = None) -> Group[int, int]:
    """A group whose first run waits until every other thread has queued behind it."""
    release = threading.Event()

    def run(items: Sequence[int]) -> list[int]:
        if not group_runs:
            release.wait(timeout=30)
        group_runs.append(list(items))
        if fail_on is not None and fail_on in items:
            raise RuntimeError(f"run with {fail_on} failed")
        return [10 * i for i in items]

    group: Group[int, int] = Group(run, most=64)
    group.release = release  # type: ignore[attr-defined]
    return group


def _submit_all(group: Group[int, int]) -> dict[int, int | BaseException]:
    got: dict[int, int | BaseException] = {}

    def one(i: int) -> None:
        try:
            got[i] = group.submit(i)
        except RuntimeError as exc:
            got[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(THREADS)]
    threads[0].start()
    while not group._busy:  # the first thread runs alone, held
        time.sleep(0.001)
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 30
    while len(group._queue) < THREADS - 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    group.release.set()  # type: ignore[attr-defined]
    for t in threads:
        t.join(timeout=30)
    return got


def test_threads_that_ask_together_share_one_run_and_each_gets_its_own_result() -> None:
    runs: list[list[int]] = []
    got = _submit_all(_held_first_run(runs))
    assert got == {i: 10 * i for i in range(THREADS)}
    assert runs[0] == [0]
    assert sorted(runs[1]) == list(range(1, THREADS))  # everyone who waited, in one run
    assert len(runs) == 2


def test_a_failed_run_fails_its_own_items_only() -> None:
    runs: list[list[int]] = []
    got = _submit_all(_held_first_run(runs, fail_on=0))
    assert isinstance(got[0], RuntimeError)
    assert all(got[i] == 10 * i for i in range(1, THREADS))  # the next run went on


# --------------------------------------------------------------------------------------------
# the Idempotency-Key record, on both backends
# --------------------------------------------------------------------------------------------


def test_claims_asked_together_give_each_key_to_one_request(store_engine: Engine) -> None:
    """Sixteen threads claim at once: eight distinct keys and eight copies of one key. Each
    distinct key is claimed; of the copies exactly one is, the others are told to wait."""
    asks = [(f"k-{i}", "fp") for i in range(8)] + [("k-same", "fp")] * 8
    with ThreadPoolExecutor(max_workers=len(asks)) as pool:
        replays = list(
            pool.map(lambda a: store.claim_idempotency(store_engine, "s", a[0], a[1]), asks)
        )
    assert all(r.outcome == "claimed" for r in replays[:8])
    same = [r.outcome for r in replays[8:]]
    assert same.count("claimed") == 1 and same.count("in_flight") == 7
    claims = [r.claim for r in replays if r.claim is not None]
    assert len({c.claim_id for c in claims}) == 9
    with store_engine.connect() as connection:
        rows = connection.execute(select(IDEMPOTENCY.c.key, IDEMPOTENCY.c.claim_id)).all()
    assert {r.key: r.claim_id for r in rows} == {c.key: c.claim_id for c in claims}

    # Their answers, stored together; a claim whose lease was taken over stores nothing.
    held = {c.key: c for c in claims}
    later = datetime.now(UTC) + timedelta(hours=1)
    taken_over = store.claim_idempotency(store_engine, "s", "k-0", "fp", now=later)
    assert taken_over.outcome == "claimed"
    with ThreadPoolExecutor(max_workers=len(held)) as pool:
        finished = dict(
            zip(
                held,
                pool.map(
                    lambda c: store.finish_idempotency(
                        store_engine, c, 201, "application/json", c.key.encode()
                    ),
                    held.values(),
                ),
                strict=True,
            )
        )
    assert finished == {k: k != "k-0" for k in held}
    for key in held:
        replay = store.claim_idempotency(store_engine, "s", key, "fp")
        if key == "k-0":
            assert replay.outcome == "in_flight"  # the run that took it over still holds it
        else:
            assert (replay.outcome, replay.body) == ("replay", key.encode())


def test_a_claim_of_another_request_is_refused_when_asked_with_others(
    store_engine: Engine,
) -> None:
    first = store.claim_idempotency(store_engine, "s", "k-used", "fp-a")
    assert first.outcome == "claimed"
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(
            pool.map(
                lambda a: store.claim_idempotency(store_engine, "s", *a).outcome,
                [("k-used", "fp-b"), ("k-new-1", "fp"), ("k-used", "fp-a"), ("k-new-2", "fp")],
            )
        )
    assert got == ["mismatch", "claimed", "in_flight", "claimed"]


@pytest.mark.parametrize("most", [1, 64])
def test_a_lone_request_runs_at_once(most: int) -> None:
    group: Group[int, int] = Group(lambda items: [i + 1 for i in items], most=most)
    assert [group.submit(i) for i in range(3)] == [1, 2, 3]


# --------------------------------------------------------------------------------------------
# reads asked together: credentials and the dataset version
# --------------------------------------------------------------------------------------------


def test_credentials_resolved_together_each_get_their_own_answer(store_engine: Engine) -> None:
    """Live, revoked, expired, unknown and forged tokens resolved at once by many threads:
    each gets what it would get alone."""
    live = [store.issue_credential(store_engine, "admin", label=f"live-{i}") for i in range(4)]
    revoked = store.issue_credential(store_engine, "admin", label="revoked")
    store.revoke_credential(store_engine, revoked[0].credential_id)
    past = datetime.now(UTC) - timedelta(days=1)
    expired = store.issue_credential(
        store_engine, "admin", label="expired", expires_at=past, now=past - timedelta(days=1)
    )
    forged = f"gg_{live[0][0].credential_id}_{'x' * 43}"  # a real id, a wrong secret
    asks = [
        *(secret for _, secret in live),
        revoked[1],
        expired[1],
        "gg_0123456789abcdef_secret",
        forged,
    ] * 3
    with ThreadPoolExecutor(max_workers=len(asks)) as pool:
        got = list(pool.map(lambda s: store.resolve_credential(store_engine, s), asks))
    want = [*(c for c, _ in live), None, None, None, None] * 3
    assert got == want


@pytest.mark.parametrize(
    "presented", ["gg_ab\x00cd_secret", f"gg_{'a' * 33}_secret", "gg_ABCDEF_secret", "gg__s"]
)
def test_a_token_whose_id_this_store_never_issues_is_refused_without_a_query(
    store_engine: Engine, presented: str
) -> None:
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(store_engine, "before_cursor_execute", seen)
    try:
        assert store.resolve_credential(store_engine, presented) is None
    finally:
        event.remove(store_engine, "before_cursor_execute", seen)
    assert statements == []
