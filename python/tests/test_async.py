"""Submissions: tickets, the event descriptor, poll_completions, and the asyncio forms."""

import asyncio
import os
import select

import numpy as np

from strata_kv import Completion, LookupResult
from strata_kv.store import OBJECT_NOT_FOUND

from conftest import wait_for


def readable(fd, timeout=0.0):
    return bool(select.select([fd], [], [], timeout)[0])


def test_many_tickets_in_flight(store):
    count = 200
    keys = [os.urandom(32) for _ in range(count)]
    data = [np.random.default_rng(index).integers(0, 256, 20000 + index, dtype=np.uint8) for index in range(count)]
    assert not readable(store.event_fd)
    puts = [store.submit_put([key], [block]) for key, block in zip(keys, data)]
    assert len(set(puts)) == count
    done = {}

    def collect():
        for completion in store.poll_completions(64):
            done[completion.ticket] = completion
        return len(done) == count

    wait_for(collect, what="200 put completions")
    assert all(done[t].status == 0 and done[t].results == [0] and done[t].operation == "put" for t in puts)
    assert not readable(store.event_fd)
    out = [np.zeros(len(block), np.uint8) for block in data]
    gets = {store.submit_get([key], [buffer]): index for index, (key, buffer) in enumerate(zip(keys, out))}
    done.clear()
    wait_for(lambda: readable(store.event_fd, 0.05) and collect(), what="200 get completions")
    for ticket, index in gets.items():
        assert done[ticket].results == [len(data[index])]
        assert np.array_equal(out[index], data[index])


def test_event_fd_is_readable_exactly_while_completions_wait(store):
    fd = store.event_fd
    ticket = store.submit_lookup([os.urandom(32)])
    wait_for(lambda: readable(fd, 0.05), what="the descriptor to become readable")
    assert readable(fd)  # stays readable until polled
    completions = store.poll_completions()
    assert [c.ticket for c in completions] == [ticket]
    assert isinstance(completions[0], Completion) and isinstance(completions[0].lookup, LookupResult)
    assert completions[0].lookup.tiers == [0] and completions[0].lookup.sizes == [0]
    assert not readable(fd)
    assert store.poll_completions() == []


def test_submit_lookup_and_delete_results(store):
    keys = [os.urandom(32) for _ in range(3)]
    store.put_from(keys[:2], [b"a" * 100, b"b" * 200])
    lookup = store.submit_lookup(keys, lease_ms=5000)
    delete = store.submit_delete([keys[2]])
    found = {}
    wait_for(lambda: found.update({c.ticket: c for c in store.poll_completions()}) or len(found) == 2)
    assert found[lookup].lookup.leading_run == 2 and found[lookup].lookup.lease != 0
    assert found[lookup].lookup.sizes == [100, 200, 0]
    assert found[delete].results == [OBJECT_NOT_FOUND]


def test_asyncio_many_in_flight(store):
    keys = [os.urandom(32) for _ in range(64)]
    data = [np.random.default_rng(100 + i).integers(0, 256, 50000, dtype=np.uint8) for i in range(64)]

    async def main():
        puts = await asyncio.gather(*[store.aput_from([k], [d]) for k, d in zip(keys, data)])
        assert puts == [[0]] * 64
        looked = await store.alookup(keys)
        assert looked.leading_run == 64 and looked.sizes == [50000] * 64
        out = [np.zeros(50000, np.uint8) for _ in range(64)]
        got = await asyncio.gather(*[store.aget_into([k], [o]) for k, o in zip(keys, out)])
        assert got == [[50000]] * 64
        assert all(np.array_equal(a, b) for a, b in zip(out, data))
        assert await store.aremove(keys[:2]) == [0, 0]

    asyncio.run(main())


def test_async_failure_raises(store):
    import pytest
    from strata_kv import StrataError

    async def main():
        # A lease over more than one batch is refused at submission.
        await store.alookup([os.urandom(32) for _ in range(5000)], lease_ms=100)

    with pytest.raises(StrataError) as error:
        asyncio.run(main())
    assert error.value.code == 1


def test_close_stops_every_event_loop_watching_the_descriptor(address):
    """A closed store's loops no longer watch its completion descriptor: once freed, its number is
    reused (by the next store's descriptor, or a socket), and a stale watch would keep the loop from
    ever registering the new one, so an await on the next store would wait forever."""
    from strata_kv import StrataStore

    async def main():
        store = StrataStore(node=address, connections=1, timeout_ms=10000)
        key = os.urandom(32)
        assert await store.aput_from([key], [np.arange(100, dtype=np.uint8)]) == [0]
        fd = store.event_fd
        store.close()
        loop = asyncio.get_running_loop()
        assert not loop.remove_reader(fd), "the loop still watches the closed store's descriptor"
        with StrataStore(node=address, connections=1, timeout_ms=10000) as again:
            looked = await asyncio.wait_for(again.alookup([key]), timeout=30)
            assert looked.leading_run == 1

    asyncio.run(main())
