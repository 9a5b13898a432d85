"""Pareto front: non-domination by hand-worked examples, the champion rule, CSV and PNG."""
from __future__ import annotations

import csv
import math
import random

import pytest

from pipelines.tracking.front import FrontPoint, champion, dominates, pareto_front, plot_front, write_front_csv


def P(name, cost, score):
    return FrontPoint(name, float(cost), float(score))


def names(points):
    return [p.name for p in points]


def test_hand_worked_front():
    # b is dominated by a (cheaper and better); d by c (same cost, lower score).
    pts = [P("a", 1, 0.5), P("b", 2, 0.4), P("c", 3, 0.7), P("d", 3, 0.6), P("e", 5, 0.9)]
    assert names(pareto_front(pts)) == ["a", "c", "e"]


def test_single_point_is_its_own_front():
    assert names(pareto_front([P("only", 7, 0.1)])) == ["only"]


def test_empty_input_gives_empty_front():
    assert pareto_front([]) == []


def test_exact_duplicates_both_stay():
    pts = [P("x", 2, 0.5), P("y", 2, 0.5), P("z", 1, 0.1)]
    assert names(pareto_front(pts)) == ["z", "x", "y"]


def test_ties_on_one_axis():
    # Same score, different cost: the costlier one is dominated.
    assert names(pareto_front([P("cheap", 1, 0.5), P("dear", 2, 0.5)])) == ["cheap"]


def test_all_but_one_dominated():
    best = P("best", 0, 1)
    pts = [best] + [P(f"p{i}", i + 1, 0.5 - i / 10) for i in range(4)]
    assert names(pareto_front(pts)) == ["best"]


def test_nan_is_an_error_naming_the_point():
    with pytest.raises(ValueError, match="bad"):
        pareto_front([P("ok", 1, 1), P("bad", 1, math.nan)])


def test_matches_naive_definition_on_random_points():
    rng = random.Random(0)
    pts = [P(f"p{i}", rng.randint(0, 5), rng.randint(0, 5) / 5) for i in range(30)]
    expected = set()
    for p in pts:
        beaten = any(
            q.cost <= p.cost and q.score >= p.score and (q.cost, q.score) != (p.cost, p.score)
            for q in pts
        )
        if not beaten:
            expected.add(p.name)
    assert set(names(pareto_front(pts))) == expected


def test_dominates_is_strict():
    a = P("a", 1, 1)
    assert not dominates(a, P("a2", 1, 1))
    assert dominates(a, P("b", 1, 0.9))
    assert not dominates(P("b", 1, 0.9), a)


def test_champion_within_budget():
    pts = [P("r9", 9, 0.8), P("r7", 7, 0.75), P("r5", 5, 0.6), P("bad", 8, 0.5)]
    assert champion(pts, max_cost=8).name == "r7"
    assert champion(pts, max_cost=100).name == "r9"
    assert champion(pts, max_cost=4) is None


def test_csv_marks_front_and_keeps_extra(tmp_path):
    pts = [
        FrontPoint("a", 1.0, 0.5, {"rho": 0.5}),
        FrontPoint("b", 2.0, 0.4, {"rho": 0.7}),
        FrontPoint("c", 3.0, 0.9, {"rho": 0.9}),
    ]
    path = write_front_csv(pts, tmp_path / "front.csv")
    rows = list(csv.DictReader(open(path)))
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert [r["on_front"] for r in rows] == ["True", "False", "True"]
    assert [r["rho"] for r in rows] == ["0.5", "0.7", "0.9"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_plot_is_a_png(tmp_path):
    path = plot_front([P("a", 1, 0.5), P("b", 2, 0.7)], tmp_path / "front.png", score_label="mIoU")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
