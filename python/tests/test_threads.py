"""One store shared by 8 threads: blocking calls and submissions at once, every byte checked."""

import os
import threading

import numpy as np

from conftest import wait_for


def test_eight_threads_share_one_store(store):
    errors = []
    collected = {}
    lock = threading.Lock()

    def worker(index):
        try:
            rng = np.random.default_rng(1000 + index)
            for round in range(20):
                keys = [os.urandom(32) for _ in range(4)]
                data = [rng.integers(0, 256, 30000 + 7 * i, dtype=np.uint8) for i in range(4)]
                assert store.put_from(keys, data) == [0] * 4
                result = store.lookup(keys)
                assert result.leading_run == 4 and result.sizes == [len(d) for d in data]
                out = [np.zeros(len(d), np.uint8) for d in data]
                if round % 2:
                    assert store.get_into(keys, out) == [len(d) for d in data]
                else:
                    ticket = store.submit_get(keys, out)

                    def mine():
                        with lock:
                            for completion in store.poll_completions():
                                collected[completion.ticket] = completion
                            return collected.pop(ticket, None)

                    completion = wait_for(mine, what=f"ticket {ticket}")
                    assert completion.results == [len(d) for d in data]
                for a, b in zip(out, data):
                    assert np.array_equal(a, b)
                assert store.remove(keys[:1]) == [0]
        except Exception as error:  # reported below with the thread's index
            errors.append((index, repr(error)))

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
