"""eval.report.time_calls: one wall time per input, after the warm-up calls."""

from rankwise.eval.report import time_calls


def test_time_calls_warms_up_then_times_every_input():
    seen = []
    seconds = time_calls(seen.append, [1, 2, 3], warmup=2)
    assert seen == [1, 2, 1, 2, 3] and len(seconds) == 3 and all(s >= 0 for s in seconds)


def test_plot_bars_means_over_seeds_with_error_bars_and_keeps_equal_labels_apart(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rankwise.eval import report

    rows = [{"model": "a", "seed": s, "ndcg@10": v} for s, v in ((1, 0.1), (2, 0.3))] + [{"model": "b", "seed": 1, "ndcg@10": 0.2},
                                                                                       {"model": "b", "seed": 1, "ndcg@10": 0.4}]
    seen = {}
    monkeypatch.setattr(report, "_save", lambda fig, ax, path, *a: seen.setdefault(len(seen), ax) and path)
    report.plot_bars(rows, ("model", "seed"), "ndcg@10", tmp_path / "m.png", mean_over="seed")
    ax = seen[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a (2 seeds)", "b (2 seeds)"]
    assert [round(p.get_width(), 6) for p in ax.patches] == [0.2, 0.3]  # the means; std 0.1 as error bars
    report.plot_bars(rows[2:], ("model",), "ndcg@10", tmp_path / "p.png")  # equal labels, no mean: two bars
    assert [round(p.get_width(), 6) for p in seen[1].patches] == [0.2, 0.4] and len(seen[1].get_yticks()) == 2
    plt.close("all")
