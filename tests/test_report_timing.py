"""eval.report.time_calls: one wall time per input, after the warm-up calls."""

from rankwise.eval.report import time_calls


def test_time_calls_warms_up_then_times_every_input():
    seen = []
    seconds = time_calls(seen.append, [1, 2, 3], warmup=2)
    assert seen == [1, 2, 1, 2, 3] and len(seconds) == 3 and all(s >= 0 for s in seconds)
