import json

from treeopt.tuning import choose_budget, load_latency

CURVE = [{"paths": p, "nodes": p + 1, "tokens_per_step": t} for p, t in [(0, 1.0), (3, 1.40), (7, 1.54)]]


def latency_file(tmp_path, rows, plain, with_p10=True):
    def row(nodes, median, p10):
        r = {"nodes": nodes, "median_ms": median}
        if with_p10:
            r["p10_ms"] = p10
        return r

    doc = {"format": "medusa-latency", "version": 1, "device": "cpu", "dtype": "float32",
           "plain_step": row(1, *plain), "verify": [row(n, m, p) for n, m, p in rows]}
    path = tmp_path / "latency.json"
    path.write_text(json.dumps(doc))
    return path


def test_budget_follows_the_low_quantile_not_the_noisy_median(tmp_path):
    # medians say 4 and 8 nodes cost the same (a slow phase hit the 4-node timings); p10 says 8 costs 20% more
    rows = [(4, (50.0, 40.0)), (8, (50.0, 48.0))]
    path = latency_file(tmp_path, [(n, m, p) for n, (m, p) in rows], (45.0, 40.0))
    lat = load_latency(path)
    assert lat.statistic == "p10_ms" and lat.step_ms == [40.0, 48.0] and lat.plain_step_ms == 40.0
    choice = choose_budget(CURVE, lat)
    assert choice.paths + 1 == 4 and abs(choice.speedup - 1.40) < 1e-9
    assert "p10 ms" in choice.table()


def test_files_without_quantiles_fall_back_to_medians(tmp_path):
    path = latency_file(tmp_path, [(4, 50.0, 0), (8, 50.0, 0)], (45.0, 0), with_p10=False)
    lat = load_latency(path)
    assert lat.statistic == "median_ms" and lat.step_ms == [50.0, 50.0]
    assert choose_budget(CURVE, lat).paths + 1 == 8
