import pytest

from sqlray.evaluation.scoring import ScoreError, join_predictions, score_row, summarize

CTX = "CREATE TABLE t (id INT PRIMARY KEY, v INT);"


def test_join_by_key_not_position():
    rows = [{"id": "a", "context": CTX, "question": "q", "answer": "SELECT v FROM t WHERE v > 1"},
            {"id": "b", "context": CTX, "question": "q", "answer": "SELECT id FROM t"}]
    preds = [{"id": "b", "prediction": "SELECT id FROM t"}, {"id": "a", "prediction": "SELECT v FROM t WHERE v > 1"}]
    scored = [score_row(r) for r in join_predictions(rows, preds)]
    assert [s["id"] for s in scored] == ["a", "b"] and all(s["ex"] and s["em"] for s in scored)
    assert summarize(scored)["all"] == {"em": 1.0, "em_strict": 1.0, "ex": 1.0, "n": 2, "n_ex": 2, "n_gold_errors": 0, "excluded": {}}


def test_missing_prediction_is_an_error():
    with pytest.raises(ScoreError, match="no prediction"):
        join_predictions([{"id": "a"}], [])


def test_bad_row_names_the_field():
    with pytest.raises(ScoreError, match="'prediction'"):
        score_row({"id": "x", "context": CTX, "answer": "SELECT 1", "prediction": None})


def test_report_shows_a_dash_for_a_group_ex_cannot_judge(tmp_path):
    from sqlray.evaluation.report import plot_report, report_tables

    rows = [{"id": "1", "shape": "having", "em": True, "em_strict": True, "ex": None, "ex_excluded": "gold_empty"},
            {"id": "2", "shape": "count", "em": False, "em_strict": False, "ex": False, "ex_excluded": None}]
    text = report_tables({"run": rows})
    having = next(line for line in text.splitlines() if "having" in line)
    assert having.split()[-3:] == ["1.000", "-", "-"]  # EM 1, EX not judgeable, no judge
    count = next(line for line in text.splitlines() if "count" in line)
    assert count.split()[-3:] == ["0.000", "0.000", "-"]
    assert plot_report({"run": rows[:1]}, tmp_path / "r.png").exists()
