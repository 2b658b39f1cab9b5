"""The trace replay and the benchmark module, run small against a real node."""

from strata_kv.replay import Workload, replay, table, trace


def test_replay_hits_the_shared_prefix_and_verifies_what_it_loads(store):
    workload = Workload(users=5, turns=3, system_tokens=64, turn_tokens=32, block_tokens=16,
                        kv_bytes_per_token=1024, zipf=1.0, seed=3)
    report = replay(store, workload, label="test")
    assert report.requests == 15
    # The system prompt is shared, and every later turn finds the conversation's earlier turns.
    assert 0.5 < report.hit_rate < 1.0
    assert report.bytes_loaded == report.hit_tokens // 16 * 16 * 1024
    assert "| test | 15 |" in table([report])
    again = replay(store, workload, label="again")  # the same trace again: everything but nothing new
    assert again.hit_rate > report.hit_rate and again.puts_refused == 0


def test_trace_follows_the_zipf_popularity():
    order = trace(Workload(users=10, turns=1000, zipf=1.5, requests=2000))
    assert order.count(0) > order.count(9) * 5
    assert trace(Workload(users=3, turns=2)) == trace(Workload(users=3, turns=2))
