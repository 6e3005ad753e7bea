"""tinydancer.evaluation.data and .protocols on tiny synthetic copies of the data layouts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tinydancer.errors import InvalidInputError
from tinydancer.evaluation.data import (
    STRONG_COLUMN,
    WEAK_COLUMN,
    RoutingData,
    concatenate,
    load_embeddings,
    load_routellm,
)
from tinydancer.evaluation.protocols import (
    Fold,
    cross_dataset,
    out_of_fold_scores,
    stratified_kfold,
    subject_folds,
)

# ------------------------------------------------------------------------------------------ synthetic layout

# subject -> rows of (prompt, weak correct, strong correct); files are written in this (unsorted) order
MMLU = {
    "zoology": [("Which animal barks?\nA. dog\nB. cat\nAnswer:", True, True),
                ('A "quoted", comma, prompt', False, True)],
    "anatomy": [("Where is the femur?", False, False),
                ("contaminated question", True, True),
                ("How many ribs?\r\nAnswer:", True, False)],
    "algebra": [("2 + 2 = ?", True, True)],
}
GSM8K = [("Janet has 3 eggs.", True, True), ("leaked gsm8k prompt", False, True),
         ("Tom's café ☕ sells 5.", False, True)]
CONTAMINATED = {"mmlu": ["contaminated question", "a prompt that is not there"], "gsm8k": ["leaked gsm8k prompt"]}


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_jsonl(path: Path, prompts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"train_prompt": "t", "eval_prompt": p, "train_idx": 0, "eval_idx": i})
             for i, p in enumerate(prompts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def expected_rows(dataset: str) -> list[tuple[str, str, bool, bool]]:
    """(subject, prompt, weak, strong) as the embeddings tables hold them: sorted files, contaminated dropped."""
    if dataset == "mmlu":
        rows = [(s, *r) for s in sorted(MMLU) for r in MMLU[s]]
    else:
        rows = [("gsm8k", *r) for r in GSM8K]
    return [r for r in rows if r[1] not in CONTAMINATED[dataset]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data folder with both layouts, for MMLU (3 subjects) and GSM8K."""
    base = tmp_path / "data"
    for subject, rows in MMLU.items():
        write_csv(base / "routellm" / "mmlu" / "responses" / f"mmlu_{subject}.csv",
                  ["prompt", WEAK_COLUMN, STRONG_COLUMN], [[p, w, s] for p, w, s in rows])
    (base / "routellm" / "mmlu" / "responses" / "notes.txt").write_text("not a subject")
    write_csv(base / "routellm" / "gsm8k" / "gsm8k_responses.csv",
              ["prompt", WEAK_COLUMN, STRONG_COLUMN, f"{WEAK_COLUMN}_response", f"{STRONG_COLUMN}_response"],
              [[p, w, s, "weak says", "strong says"] for p, w, s in GSM8K])
    for dataset, prompts in CONTAMINATED.items():
        write_jsonl(base / "routellm" / dataset / "contaminated_prompts.jsonl", prompts)
    rng = np.random.default_rng(7)
    for dataset in ("mmlu", "gsm8k"):
        rows = expected_rows(dataset)
        header = ["subject", "weak_correct", "strong_correct", "prompt_chars"]
        table = [[s, w, st, len(p)] for s, p, w, st in rows]
        if dataset == "gsm8k":  # as published: no subject column
            header, table = header[1:], [r[1:] for r in table]
        write_csv(base / "embeddings" / f"{dataset}_labels.csv", header, table)
        np.save(base / "embeddings" / f"{dataset}.npy", rng.normal(size=(len(rows), 4)).astype(np.float32))
    return base


# ------------------------------------------------------------------------------------------------ loaders


@pytest.mark.parametrize("dataset", ["mmlu", "gsm8k"])
def test_load_routellm(root, dataset):
    data = load_routellm(root, dataset)
    rows = expected_rows(dataset)
    assert data.name == dataset and len(data) == len(rows)
    assert data.prompts.tolist() == [r[1] for r in rows]
    assert data.subject.tolist() == [r[0] for r in rows]
    assert data.weak.tolist() == [float(r[2]) for r in rows]
    assert data.strong.tolist() == [float(r[3]) for r in rows]
    assert data.prompt_chars.tolist() == [len(r[1]) for r in rows]
    assert data.embeddings is None
    assert data.strong.dtype == np.float64 and data.prompt_chars.dtype == np.int64


def test_routellm_drops_contaminated_prompts_and_keeps_file_order(root):
    data = load_routellm(root, "mmlu")
    assert "contaminated question" not in data.prompts.tolist()
    assert data.subject.tolist() == ["algebra", "anatomy", "anatomy", "zoology", "zoology"]
    assert "How many ribs?\r\nAnswer:" in data.prompts.tolist()  # quoted line breaks kept as written


@pytest.mark.parametrize("dataset", ["mmlu", "gsm8k"])
def test_the_two_layouts_line_up(root, dataset):
    a, b = load_embeddings(root, dataset), load_routellm(root, dataset)
    for key in ("strong", "weak", "subject", "prompt_chars"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.embeddings.shape == (len(b), 4) and a.embeddings.dtype == np.float32
    assert a.prompts is None


def test_load_embeddings_fills_the_subject_without_a_column(root):
    assert set(load_embeddings(root, "gsm8k").subject.tolist()) == {"gsm8k"}


def test_the_default_root_is_relative(monkeypatch, root):
    (root.parent / "work").mkdir()
    monkeypatch.chdir(root.parent / "work")
    (root.parent / "shared").mkdir()
    (root.parent / "shared" / "data").symlink_to(root, target_is_directory=True)
    assert len(load_embeddings(dataset="gsm8k")) == len(expected_rows("gsm8k"))
    assert len(load_routellm(dataset="gsm8k")) == len(expected_rows("gsm8k"))


@pytest.mark.parametrize(("remove", "loader", "dataset"), [
    ("routellm/mmlu/contaminated_prompts.jsonl", load_routellm, "mmlu"),
    ("routellm/gsm8k/gsm8k_responses.csv", load_routellm, "gsm8k"),
    ("embeddings/mmlu.npy", load_embeddings, "mmlu"),
    ("embeddings/gsm8k_labels.csv", load_embeddings, "gsm8k"),
])
def test_missing_files(root, remove, loader, dataset):
    (root / remove).unlink()
    with pytest.raises(InvalidInputError, match=rf"^root: .*{Path(remove).name}: no such file"):
        loader(root, dataset)


def test_missing_subject_files(root):
    for f in (root / "routellm" / "mmlu" / "responses").glob("mmlu_*.csv"):
        f.unlink()
    with pytest.raises(InvalidInputError, match=r"^root: .*no mmlu_<subject>.csv files"):
        load_routellm(root, "mmlu")
    with pytest.raises(InvalidInputError, match="^root: "):
        load_routellm(root / "nowhere", "mmlu")


def test_bad_dataset_names(root):
    for bad in ("../mmlu", "", "mm lu", 3):
        with pytest.raises(InvalidInputError, match="^dataset "):
            load_embeddings(root, bad)
    with pytest.raises(InvalidInputError, match="^dataset must be one of mmlu, gsm8k"):
        load_routellm(root, "mt_bench")


def test_bad_contents(root):
    responses = root / "routellm" / "mmlu" / "responses"
    write_csv(responses / "mmlu_anatomy.csv", ["prompt", WEAK_COLUMN, STRONG_COLUMN], [["q", "yes", "True"]])
    with pytest.raises(InvalidInputError, match=r"mmlu_anatomy.csv: column .*Mixtral.* True or False, got 'yes'"):
        load_routellm(root, "mmlu")
    write_csv(responses / "mmlu_anatomy.csv", ["prompt", STRONG_COLUMN], [["q", "True"]])
    with pytest.raises(InvalidInputError, match=r"mmlu_anatomy.csv: no column .*Mixtral"):
        load_routellm(root, "mmlu")
    write_csv(responses / "mmlu_anatomy.csv", ["prompt", WEAK_COLUMN, STRONG_COLUMN], [["q", "True"]])
    with pytest.raises(InvalidInputError, match=r"row 1 has 2 values"):
        load_routellm(root, "mmlu")
    (root / "routellm" / "gsm8k" / "contaminated_prompts.jsonl").write_text('{"train_prompt": "x"}\n')
    with pytest.raises(InvalidInputError, match="line 1 has no 'eval_prompt'"):
        load_routellm(root, "gsm8k")
    (root / "routellm" / "gsm8k" / "contaminated_prompts.jsonl").write_text("{not json\n")
    with pytest.raises(InvalidInputError, match="cannot be read as JSON lines"):
        load_routellm(root, "gsm8k")


def test_embeddings_and_labels_must_match(root):
    emb = root / "embeddings"
    np.save(emb / "gsm8k.npy", np.zeros((5, 4), dtype=np.float32))
    with pytest.raises(InvalidInputError, match=r"gsm8k_labels.csv has 2 rows but .*gsm8k.npy has 5"):
        load_embeddings(root, "gsm8k")
    np.save(emb / "gsm8k.npy", np.zeros(2, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="expected a 2-D numeric array"):
        load_embeddings(root, "gsm8k")
    np.save(emb / "gsm8k.npy", np.full((2, 4), np.nan, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        load_embeddings(root, "gsm8k")
    (emb / "gsm8k.npy").write_bytes(b"not an array")
    with pytest.raises(InvalidInputError, match="not a readable .npy array"):
        load_embeddings(root, "gsm8k")
    write_csv(emb / "mmlu_labels.csv", ["subject", "weak_correct", "prompt_chars"], [["a", "True", 3]])
    with pytest.raises(InvalidInputError, match="no column 'strong_correct'"):
        load_embeddings(root, "mmlu")
    write_csv(emb / "mmlu_labels.csv", ["weak_correct", "strong_correct", "prompt_chars"], [["True", "True", "x"]] * 5)
    with pytest.raises(InvalidInputError, match="'prompt_chars' must hold integers"):
        load_embeddings(root, "mmlu")


# ---------------------------------------------------------------------------------------------- RoutingData


def make_data(n: int, seed: int = 0, subjects: int = 6, name: str = "synthetic", dim: int = 3) -> RoutingData:
    rng = np.random.default_rng(seed)
    return RoutingData(name=name, strong=rng.random(n) < 0.8, weak=rng.random(n) < 0.6,
                       subject=np.array([f"s{i}" for i in rng.integers(0, subjects, n)]),
                       prompt_chars=np.arange(n) + 10, embeddings=rng.normal(size=(n, dim)))


def test_routing_data_converts_and_takes_rows():
    data = make_data(10)
    assert data.strong.dtype == np.float64 and data.embeddings.dtype == np.float32
    part = data.take([3, 1])
    assert part.prompt_chars.tolist() == [13, 11] and part.name == "synthetic"
    np.testing.assert_array_equal(part.embeddings, data.embeddings[[3, 1]])
    assert len(data.take(np.arange(10) % 2 == 0)) == 5
    np.testing.assert_array_equal(data.weak_sufficient, (data.weak == 1) | (data.strong == 0))
    with pytest.raises(InvalidInputError, match="^rows"):
        data.take([10])
    with pytest.raises(InvalidInputError, match="^rows"):
        data.take([True, False])
    with pytest.raises(InvalidInputError, match="^rows"):
        data.take([0.5])


@pytest.mark.parametrize(("field", "value"), [
    ("weak", [1.0, 0.0]), ("subject", ["a"] * 4), ("prompt_chars", [1.5, 2.0, 3.0]),
    ("embeddings", np.zeros(3)), ("strong", [1.0, np.nan, 0.0]), ("prompts", ["a", 2, "c"]),
])
def test_routing_data_checks_its_fields(field, value):
    fields = {"name": "x", "strong": [1, 0, 1], "weak": [0, 0, 1], "subject": ["a", "b", "c"],
              "prompt_chars": [1, 2, 3], field: value}
    with pytest.raises(InvalidInputError, match=f"^{field} "):
        RoutingData(**fields)


def test_concatenate():
    a, b = make_data(4, 1, name="a"), make_data(3, 2, name="b")
    both = concatenate([a, b])
    assert both.name == "a+b" and len(both) == 7
    np.testing.assert_array_equal(both.embeddings[4:], b.embeddings)
    assert concatenate([a, load_like(b)]).embeddings is None
    with pytest.raises(InvalidInputError, match="embeddings of different widths"):
        concatenate([a, make_data(3, dim=5)])
    with pytest.raises(InvalidInputError, match="^parts"):
        concatenate([])


def load_like(data: RoutingData) -> RoutingData:
    """``data`` without embeddings."""
    return RoutingData(data.name, data.strong, data.weak, data.subject, data.prompt_chars)


# ------------------------------------------------------------------------------------------------ protocols


def assert_partition(folds: list[Fold], n: int) -> None:
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(n))
    for f in folds:
        assert np.intersect1d(f.train, f.test).size == 0
        assert sorted(np.concatenate([f.train, f.test]).tolist()) == list(range(n))
        assert f.train.dtype == np.int64 and np.all(np.diff(f.test) > 0)


def test_stratified_kfold_partitions_and_keeps_proportions():
    data = make_data(503, 3)
    folds = stratified_kfold(data, k=5, seed=0)
    assert len(folds) == 5
    assert_partition(folds, 503)
    sizes = [len(f.test) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    outcome = 2 * data.strong + data.weak
    for value in np.unique(outcome):
        counts = [int(np.sum(outcome[f.test] == value)) for f in folds]
        assert max(counts) - min(counts) <= 1


def test_stratified_kfold_on_given_strata_and_seeds():
    strata = np.array(["x"] * 30 + ["y"] * 9 + ["z"] * 3)
    folds = stratified_kfold(strata, k=3, seed=4)
    assert_partition(folds, 42)
    for f in folds:
        assert [int(np.sum(strata[f.test] == s)) for s in "xyz"] == [10, 3, 1]
    again = stratified_kfold(strata, k=3, seed=4)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again, strict=True))
    other = stratified_kfold(strata, k=3, seed=5)
    assert not all(np.array_equal(a.test, b.test) for a, b in zip(folds, other, strict=True))


def test_stratified_kfold_bad_input():
    with pytest.raises(InvalidInputError, match="^k "):
        stratified_kfold(np.zeros(4), k=5)
    with pytest.raises(InvalidInputError, match="^k "):
        stratified_kfold(np.zeros(4), k=1)
    with pytest.raises(InvalidInputError, match="^labels "):
        stratified_kfold(np.zeros((2, 2)))
    with pytest.raises(InvalidInputError, match="^labels "):
        stratified_kfold([1.0, np.nan, 2.0], k=2)
    with pytest.raises(InvalidInputError, match="^seed "):
        stratified_kfold(np.zeros(4), k=2, seed=-1)


def test_subject_folds_never_share_subjects():
    data = make_data(400, 5, subjects=9)
    folds = subject_folds(data, k=4, seed=1)
    assert_partition(folds, 400)
    for f in folds:
        assert not set(data.subject[f.train]) & set(data.subject[f.test])
    assert [len(f.test) for f in subject_folds(data.subject, k=4, seed=1)] == [len(f.test) for f in folds]


def test_subject_folds_balance_rows():
    subject = np.repeat(["a", "b", "c", "d", "e", "f"], [50, 40, 30, 30, 20, 10])
    sizes = sorted(len(f.test) for f in subject_folds(subject, k=3))
    assert sizes == [60, 60, 60]


def test_subject_folds_bad_input():
    with pytest.raises(InvalidInputError, match=r"^k must be <= the number of subjects \(2\)"):
        subject_folds(["a", "b", "a"], k=3)
    with pytest.raises(InvalidInputError, match="^subject "):
        subject_folds([])


def test_cross_dataset():
    a, b = make_data(5, 1, name="mmlu"), make_data(3, 2, name="gsm8k")
    data, folds = cross_dataset(a, b)
    assert data.name == "mmlu+gsm8k" and len(data) == 8
    assert folds[0].train.tolist() == [0, 1, 2, 3, 4] and folds[0].test.tolist() == [5, 6, 7]
    assert folds[1].train.tolist() == [5, 6, 7] and folds[1].test.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(InvalidInputError, match="^b "):
        cross_dataset(a, [1, 2])


def test_out_of_fold_scores_never_score_a_training_row():
    data = make_data(60, 2)
    seen: list[set[int]] = []

    def fit(train: RoutingData):
        rows = set(train.prompt_chars.tolist())  # prompt_chars identifies the rows here
        seen.append(rows)

        def scorer(test: RoutingData) -> np.ndarray:
            assert not rows & set(test.prompt_chars.tolist())
            return test.prompt_chars * 2.0

        return scorer

    scores = out_of_fold_scores(fit, data, stratified_kfold(data, k=4))
    np.testing.assert_array_equal(scores, data.prompt_chars * 2.0)
    assert len(seen) == 4 and all(len(s) == 45 for s in seen)


def test_out_of_fold_scores_bad_input():
    data = make_data(6)
    good = stratified_kfold(data, k=2)

    def fit(_train):
        return lambda test: np.zeros(len(test))

    with pytest.raises(InvalidInputError, match="^folds: every row"):
        out_of_fold_scores(fit, data, good[:1])
    with pytest.raises(InvalidInputError, match=r"^folds\[0\]: train and test share"):
        out_of_fold_scores(fit, data, [Fold(np.arange(6), np.arange(6))])
    with pytest.raises(InvalidInputError, match=r"^folds\[0\]\.test: indices"):
        out_of_fold_scores(fit, data, [(np.arange(3), np.arange(3, 7))])
    with pytest.raises(InvalidInputError, match="^folds must"):
        out_of_fold_scores(fit, data, [])
    with pytest.raises(InvalidInputError, match=r"^the scorer of folds\[0\] must return"):
        out_of_fold_scores(lambda _t: (lambda test: np.zeros(2)), data, good)
    with pytest.raises(InvalidInputError, match=r"^the scorer of folds\[0\] returned NaN"):
        out_of_fold_scores(lambda _t: (lambda test: np.full(len(test), np.nan)), data, good)
    with pytest.raises(InvalidInputError, match="^fit must return a scorer"):
        out_of_fold_scores(lambda _t: None, data, good)
    with pytest.raises(InvalidInputError, match="^data "):
        out_of_fold_scores(fit, [1, 2], good)
    with pytest.raises(InvalidInputError, match="^fit "):
        out_of_fold_scores(None, data, good)
