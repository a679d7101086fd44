"""The spool: durable before enqueue returns, group commit, worker ownership, state files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mxflow.queue.spool import MAGIC, QueueState, RecipientState, Spool, SpoolError, owner_of


async def test_enqueue_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    env = await spool.enqueue(
        "a@x.test", ["b@y.test"], b"Subject: hi\r\n\r\nbody\r\n", message_id="<m@x.test>"
    )
    path = tmp_path / "spool" / "queue" / env.queue_id
    data = path.read_bytes()
    assert data.startswith(MAGIC) and data.endswith(b"body\r\n")
    loaded, raw = spool.load(env.queue_id)
    assert loaded == env and raw == b"Subject: hi\r\n\r\nbody\r\n"
    assert spool.complete(env.queue_id)
    spool.close()


async def test_a_file_cut_short_is_never_read_and_removed_at_recovery(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    env = await spool.enqueue("a@x.test", ["b@y.test"], b"x" * 5000)
    good = await spool.enqueue("a@x.test", ["b@y.test"], b"y" * 5000)
    path = tmp_path / "spool" / "queue" / env.queue_id
    path.write_bytes(path.read_bytes()[:-100])  # as if the process died mid-write
    assert not spool.complete(env.queue_id)
    with pytest.raises(SpoolError):
        spool.load(env.queue_id)
    assert spool.clean_incomplete() == 1
    assert spool.ids() == [good.queue_id]
    spool.close()


async def test_concurrent_enqueues_share_group_commits(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    envs = await asyncio.gather(
        *(spool.enqueue("a@x.test", ["b@y.test"], b"x" * 10_000) for _ in range(200))
    )
    assert len({e.queue_id for e in envs}) == 200
    assert spool.committed == 200
    assert spool.batches < 200  # several messages per fsync'd directory commit
    assert spool.ids() == sorted(e.queue_id for e in envs)
    spool.close()


async def test_workers_own_disjoint_ids_and_state_round_trips(tmp_path: Path) -> None:
    spools = [Spool(tmp_path / "spool", worker=i, workers=3) for i in range(3)]
    ids = [(await s.enqueue("", ["r@y.test"], b"m\r\n")).queue_id for s in spools for _ in range(3)]
    for i, s in enumerate(spools):
        owned = s.owned_ids()
        assert len(owned) == 3 and all(owner_of(q, 3) == i for q in owned)
    assert sorted(ids) == spools[0].ids()
    state = QueueState(
        rcpts={"r@y.test": RecipientState("deferred", "451 later", 2)},
        attempts=2,
        next_attempt=123.0,
    )
    spools[0].save_state(ids[0], state)
    assert spools[1].load_state(ids[0]).to_json() == state.to_json()
    # a restart with fewer workers still covers every id
    single = Spool(tmp_path / "spool", worker=0, workers=1)
    assert single.owned_ids() == single.ids()
    spools[0].request(ids[0], "retry")
    assert list(spools[1].take_requests()) == []
    assert list(spools[0].take_requests()) == [(ids[0], "retry")]
    for s in spools:
        s.close()


async def test_preallocated_names_are_handed_out_only_after_a_directory_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "spool", preallocate=8)
    dir_fsyncs: list[bool] = []
    real_write_batch = spool._write_batch

    def write_batch(items: list[tuple[str, bytes, bytes, bool]], new_names: bool = False) -> None:
        dir_fsyncs.append(new_names)
        real_write_batch(items, new_names)

    monkeypatch.setattr(spool, "_write_batch", write_batch)
    first = spool.new_queue_id()  # none reserved yet: a fresh name, and a refill starts
    assert spool._refill is not None
    await spool._refill
    assert len(spool._fresh) == 8 and not spool._reserved  # created, not yet handed out
    await spool.enqueue("a@x.test", ["b@y.test"], b"one\r\n", queue_id=first)
    assert dir_fsyncs == [True] and len(spool._reserved) == 8 and not spool._fresh
    ids = []
    for _ in range(6):
        queue_id = spool.new_queue_id()
        await spool.enqueue("a@x.test", ["b@y.test"], b"two\r\n", queue_id=queue_id)
        ids.append(queue_id)
    assert len(set(ids)) == 6 and first not in ids
    assert all(spool.load(q)[1] == b"two\r\n" for q in ids)
    if spool._refill is not None:
        await spool._refill
    spool.close()
    assert sorted(spool.ids()) == sorted([first, *ids])
    assert len(list((tmp_path / "spool" / "queue").iterdir())) == 7  # unused names removed
