"""The pure mappings: quota -> native settings, reservations, lockdown rules."""
import pytest

from rustymt.engine import lockdown
from rustymt.engine.isolation import MIN_FRAMES, PAGE_FRAME_BYTES, Quota, native_settings, reserve_minimums


def test_partition_is_half_the_memory_quota_and_a_quarter_reserved():
    settings = native_settings(Quota(memory_mb=64, cpu_shares=2048, cpu_min_percent=5, cpu_percent=200, iops=300),
                               pool_frames=100_000, frame_bytes=PAGE_FRAME_BYTES)
    assert settings.max_frames == (64 << 20) // 2 // PAGE_FRAME_BYTES
    assert settings.min_frames == settings.max_frames // 4
    assert settings.memory_quota_bytes == 64 << 20
    assert (settings.shares, settings.min_percent, settings.max_percent, settings.iops) == (2048, 5, 200, 300)
    assert native_settings(Quota(memory_mb=0.25), 8192, PAGE_FRAME_BYTES).max_frames == MIN_FRAMES
    assert native_settings(Quota(memory_mb=1 << 20), 8192, PAGE_FRAME_BYTES).max_frames == 8192
    assert native_settings(Quota(), 8192, PAGE_FRAME_BYTES).max_frames == 8192  # no quota: whole pool


def test_reservations_fit_half_the_pool():
    assert reserve_minimums({1: 100, 2: 200}, 1000) == {1: 100, 2: 200}
    scaled = reserve_minimums({1: 400, 2: 800}, 1000)
    assert sum(scaled.values()) <= 500 and abs(scaled[2] - 2 * scaled[1]) <= 1


@pytest.mark.parametrize("args", [{"memory_mb": -1}, {"cpu_shares": 0}, {"iops": "x"}, {"nope": 1},
                                  {"cpu_percent": 100, "cpu_min_percent": 200}, {"max_connections": True}])
def test_bad_quotas_are_refused(args):
    with pytest.raises(ValueError):
        Quota.from_args(args)


def test_lockdown_rules_follow_the_base_rules():
    rules = lockdown.parse_rules('[{"action": "drop_table", "object": null, "result": "deny"}]')
    assert rules == [("DROP_TABLE", None, "deny")]
    table = lockdown.authorizer_rules(rules)
    assert table[: len(lockdown.BASE_RULES)] == list(lockdown.BASE_RULES) and table[-1] == rules[0]
    assert lockdown.parse_rules(lockdown.rules_json(rules)) == rules
    for bad in ("{", "{}", '[{"action": "FLY"}]', '[{"action": "PRAGMA", "result": "maybe"}]', '[{"action": "PRAGMA", "object": 3}]'):
        with pytest.raises(ValueError):
            lockdown.parse_rules(bad)
