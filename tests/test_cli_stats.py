"""``tinydancer stats`` and RoutingStatistics.estimated_saving."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinydancer import cli
from tinydancer.errors import InvalidInputError
from tinydancer.storage import Storage
from tinydancer.types import Candidate


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "routing.db"
    rng = np.random.default_rng(0)
    with Storage(path) as st:
        st.insert_candidates([Candidate(f"c{i}", rng.standard_normal(8)) for i in range(4)])
        for i in range(10):
            st.record_routing(f"c{i % 4}", rng.standard_normal(8), 0.9, i < 7, 0.1, float(i + 1))
    return path


def test_estimated_saving(database):
    with Storage(database, read_only=True) as st:
        s = st.get_statistics()
    assert (s.total_routes, s.lightweight_routes, s.powerful_routes) == (10, 7, 3)
    assert s.estimated_saving(10.0, 1.0) == pytest.approx(1 - (3 * 10 + 7 * 1) / 100)
    assert s.estimated_saving(10.0, 0.0) == pytest.approx(0.7)
    with pytest.raises(InvalidInputError, match="strong_cost"):
        s.estimated_saving(0.0, 1.0)
    with pytest.raises(InvalidInputError, match="weak_cost"):
        s.estimated_saving(1.0, -1.0)
    with Storage(":memory:") as empty:
        assert empty.get_statistics().estimated_saving(10.0, 1.0) == 0.0


def test_stats_table_and_json(database, capsys):
    before = database.read_bytes()
    assert cli.main(["stats", str(database)]) == 0
    out = capsys.readouterr().out
    assert "10 routing decisions (10 of candidates, 0 of queries), 4 stored candidates" in out
    assert "lightweight           7  (70.0%)" in out and "of them 0 fallbacks" in out
    assert cli.main(["stats", str(database), "--json", "--price-strong", "10", "--price-weak", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_routes"] == 10 and data["estimated_saving"] == pytest.approx(0.63)
    assert data["p50_inference_time_us"] == pytest.approx(5.5)
    assert database.read_bytes() == before  # read only


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b"not sqlite at all" * 100), "routing.db"),
])
def test_stats_errors_are_one_line(tmp_path, capsys, make, message):
    path = tmp_path / "routing.db"
    make(path)
    assert cli.main(["stats", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_stats_price_options_are_checked(database, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["stats", str(database), "--price-strong", "0"])
    assert exc.value.code == 2
