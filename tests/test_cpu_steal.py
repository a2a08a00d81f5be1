"""CPU time and host steal from /proc/stat (great_tf/cpu_steal.py), by hand and on this machine."""

import os

import pytest

from great_tf import cpu_steal

STAT = """cpu  100 5 20 800 10 0 5 60 7 0
cpu0 50 2 10 400 5 0 3 30 7 0
intr 12345
"""


def test_the_aggregate_line_is_read_with_steal_and_without_guest_time():
    # 100 + 5 + 20 + 800 + 10 + 0 + 5 + 60 = 1000; guest (7) is already in user.
    assert cpu_steal.parse_cpu_line(STAT) == {"total": 1000, "steal": 60}
    assert cpu_steal.parse_cpu_line("cpu 1 2 3 4\n") == {"total": 10, "steal": 0}  # an old kernel
    with pytest.raises(ValueError):
        cpu_steal.parse_cpu_line("cpu0 1 2 3\n")


def test_counters_between_readings_add_up_over_attempts_and_give_the_stolen_share(tmp_path):
    first = cpu_steal.elapsed({"total": 1000, "steal": 60}, {"total": 3000, "steal": 560})
    assert first == {"cpu_jiffies": 2000, "steal_jiffies": 500}
    entry = cpu_steal.add({"seconds": 7.0}, first)
    entry = cpu_steal.add(entry, {"cpu_jiffies": 2000, "steal_jiffies": 1500})
    assert entry == {"cpu_jiffies": 4000, "steal_jiffies": 2000}
    assert cpu_steal.stolen_percent(entry) == pytest.approx(50.0)
    assert cpu_steal.stolen_percent({"seconds": 7.0}) is None  # recorded before the counters existed
    assert cpu_steal.elapsed(None, {"total": 1, "steal": 0}) is None and cpu_steal.add({}, None) == {}
    assert cpu_steal.read_cpu_times(str(tmp_path / "no_such_file")) is None
    assert cpu_steal.cpu_minutes({"cpu_seconds": 90.0}) == pytest.approx(1.5)
    assert cpu_steal.cpu_minutes({"seconds": 7.0}) is None  # a stage from before it was recorded
    assert cpu_steal.children_cpu_used(None, {"cpu_seconds": 5.0}) == {}  # not counted at the start


@pytest.mark.skipif(not os.path.exists(cpu_steal.PROC_STAT), reason="no /proc/stat (not Linux)")
def test_this_machine_s_counters_only_grow():
    before = cpu_steal.read_cpu_times()
    sum(i * i for i in range(200_000))
    after = cpu_steal.read_cpu_times()
    spent = cpu_steal.elapsed(before, after)
    assert spent["cpu_jiffies"] >= 0 and 0 <= spent["steal_jiffies"] <= spent["cpu_jiffies"]
