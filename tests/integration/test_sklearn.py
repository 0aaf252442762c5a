"""The scikit-learn estimators: scikit-learn's own checks, Pipeline and GridSearchCV,
partial_fit as a true continuation, labels of any kind, pickling, and fitting on files."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import streamgd  # noqa: E402
from streamgd.config import CONFIG_SETTINGS, FitConfig  # noqa: E402
from streamgd.errors import DataError, StreamgdError, UsageError  # noqa: E402
from streamgd.sklearn import (  # noqa: E402
    InputError,
    ParameterError,
    StreamGDClassifier,
    StreamGDRegressor,
)
from streamgd.training.continuation import continue_state, start_state  # noqa: E402

# What scikit-learn's checks test that streamgd does not promise, and why.
WEIGHTS_ARE_NOT_REPEATS = (
    "a weight of k is not k copies of the row: the statistics pass's unbiased spread counts "
    "rows (n / (n - 1)), so that scaling every weight changes nothing, while copies add rows; "
    "and copies are drawn into different mini-batches (with standardize=False, "
    "precondition=False and shuffle=False the two agree to float32 rounding, ~1e-8)"
)


def expected_failures(estimator) -> dict[str, str]:
    return {"check_sample_weight_equivalence_on_dense_data": WEIGHTS_ARE_NOT_REPEATS}


@parametrize_with_checks(
    [StreamGDRegressor(), StreamGDClassifier()], expected_failed_checks=expected_failures
)
def test_scikit_learn_checks(estimator, check):
    check(estimator)


# -- parameters -----------------
def test_parameters_are_exactly_the_settings_that_apply():
    applying = set(CONFIG_SETTINGS) - {"shards", "sync_every"}
    regressor = StreamGDRegressor().get_params()
    classifier = StreamGDClassifier().get_params()
    assert set(regressor) == applying - {"class_weight"}
    assert set(classifier) == applying
    for name, value in regressor.items():
        assert value == CONFIG_SETTINGS[name].default, name
    for name, value in classifier.items():
        expected = None if name == "loss" else CONFIG_SETTINGS[name].default
        assert value == expected, name


def test_init_only_stores_and_clone_keeps_the_parameters():
    est = StreamGDRegressor(lr=-3, loss="nonsense")  # checked at fit, not here
    assert clone(est).get_params()["lr"] == -3
    with pytest.raises(TypeError, match="unexpected keyword argument 'random_state'"):
        StreamGDRegressor(random_state=0)
    with pytest.raises(ParameterError, match="--lr must be"):
        est.set_params(loss="squared").fit(np.eye(3), [1.0, 2.0, 3.0])


def test_errors_are_streamgd_errors_and_value_errors():
    x, y = np.random.default_rng(0).normal(size=(50, 2)), np.arange(50.0)
    with pytest.raises(ParameterError) as info:
        StreamGDRegressor(loss="logistic").fit(x, y)
    assert isinstance(info.value, UsageError) and isinstance(info.value, ValueError)
    with pytest.raises(ParameterError, match="target: these settings describe files"):
        StreamGDRegressor(target="y").fit(x, y)
    with pytest.raises(ParameterError, match="softmax"):
        StreamGDClassifier(loss="logistic").fit(x, np.arange(50) % 3)
    with pytest.raises(InputError) as info:
        StreamGDRegressor(loss="poisson").fit(x, y - 100)
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)
    assert issubclass(InputError, StreamgdError)


def test_importing_streamgd_or_its_command_line_does_not_import_sklearn():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import streamgd, streamgd.cli.main
        streamgd.fit(np.eye(4), np.arange(4.0), epochs=1)
        print("sklearn" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- fitting -----------------
@pytest.fixture
def regression():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 3)) * [1.0, 4.0, 0.5] + [0.0, 3.0, -2.0]
    y = x @ [1.5, -0.25, 3.0] + 2.0 + 0.3 * rng.normal(size=600)
    return x, y


def _lstsq(x, y):
    solution = np.linalg.lstsq(np.column_stack([x, np.ones(len(x))]), y, rcond=None)[0]
    return solution[:-1], solution[-1]


def test_fit_is_streamgd_fit(regression):
    x, y = regression
    est = StreamGDRegressor(batch_size=64, seed=4).fit(x, y)
    model = streamgd.fit(x, y, batch_size=64, seed=4)
    np.testing.assert_array_equal(est.coef_, model.coef_)
    assert est.intercept_ == model.intercept_
    assert est.n_iter_ == 5 and est.n_features_in_ == 3
    np.testing.assert_array_equal(est.predict(x), model.predict(x))
    # whole-data batches at lr 1: preconditioned steps are Newton steps for least squares
    exact = StreamGDRegressor(batch_size=600, schedule="constant", epochs=3).fit(x, y)
    coef, intercept = _lstsq(x, y)
    np.testing.assert_allclose(exact.coef_, coef, rtol=1e-6)
    assert exact.intercept_ == pytest.approx(intercept, rel=1e-6)


def test_dataframe_names_reach_the_model(regression):
    x, y = regression
    frame = pd.DataFrame(x, columns=["a", "b", "y"])  # a feature named like the target
    est = StreamGDRegressor().fit(frame, pd.Series(y, name="price"))
    assert list(est.feature_names_in_) == ["a", "b", "y"]
    assert est.model_.features == ("a", "b", "y") and est.model_.target == "y_"
    assert not hasattr(StreamGDRegressor().fit(x, y), "feature_names_in_")


# -- partial_fit ---------------------------------------------------------------------------------
def test_partial_fit_continues_the_state_to_the_bit(regression):
    """k partial_fit calls over chunks of whole batches (no shuffling) take the steps of one
    pass over their concatenation: weights, Adam's moments and the step counter go on."""
    x, y = regression
    chunks = [slice(0, 200), slice(200, 400), slice(400, 600)]
    est = StreamGDRegressor(optimizer="adam", batch_size=50, shuffle=False)
    for part in chunks:
        est.partial_fit(x[part], y[part])
    assert est.state_.step == 12 and est.n_iter_ == 1 and len(est.state_.history) == 3

    config = FitConfig(target="y", optimizer="adam", batch_size=50, shuffle=False)
    tables = [pa.table({"x0": x[p, 0], "x1": x[p, 1], "x2": x[p, 2], "y": y[p]}) for p in chunks]
    state = start_state(tables[0], config)  # statistics from the first chunk, as partial_fit
    continue_state(state, pa.concat_tables(tables), config)
    np.testing.assert_array_equal(est.state_.params, state.params)
    for key, value in state.opt_state.items():
        np.testing.assert_array_equal(est.state_.opt_state[key], value)
    assert est.state_.step == state.step


def test_partial_fit_is_not_a_retrain(regression):
    x, y = regression
    once = StreamGDRegressor(batch_size=50).partial_fit(x[:300], y[:300])
    twice = clone(once).partial_fit(x[:300], y[:300]).partial_fit(x[300:], y[300:])
    fresh = StreamGDRegressor(batch_size=50).partial_fit(x[300:], y[300:])
    assert twice.state_.step == 12
    assert not np.array_equal(twice.coef_, fresh.coef_)
    # statistics stay those of the first call
    np.testing.assert_array_equal(twice.state_.spec.center, once.state_.spec.center)


def test_partial_fit_reaches_least_squares(regression):
    x, y = regression
    est = StreamGDRegressor(batch_size=32, seed=1)
    for _ in range(16):  # the decaying rate averages the mini-batch noise out
        for start in range(0, 600, 150):
            est.partial_fit(x[start : start + 150], y[start : start + 150])
    coef, intercept = _lstsq(x, y)
    np.testing.assert_allclose(est.coef_, coef, rtol=2e-3, atol=2e-3)
    assert est.intercept_ == pytest.approx(intercept, abs=5e-3)


def test_continue_state_leaves_the_state_alone_on_an_error(regression):
    x, y = regression
    config = FitConfig(target="y", batch_size=50)
    table = pa.table({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "y": y})
    state = start_state(table, config)
    before = state.params.copy()
    with pytest.raises(DataError, match="lacks the column"):
        continue_state(state, table.drop_columns(["x1"]), config)
    bad = table.set_column(1, "x1", pa.array(np.where(np.arange(600) == 500, np.inf, x[:, 1])))
    with pytest.raises(DataError, match="infinite"):
        continue_state(state, bad, config)  # after some steps on the rows before it
    np.testing.assert_array_equal(state.params, before)
    assert state.step == 0


def test_partial_fit_refuses_a_changed_loss(regression):
    x, y = regression
    est = StreamGDRegressor().partial_fit(x, y)
    with pytest.raises(ParameterError, match="loss changed"):
        est.set_params(loss="huber").partial_fit(x, y)


# -- classification -----------------
@pytest.fixture
def blobs():
    rng = np.random.default_rng(5)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    labels = rng.integers(0, 3, size=900)
    x = centres[labels] + rng.normal(size=(900, 2))
    return x, np.array(["red", "green", "blue"])[labels]


def test_binary_string_labels(blobs):
    x, names = blobs
    keep = names != "blue"
    est = StreamGDClassifier().fit(x[keep], names[keep])
    assert list(est.classes_) == ["green", "red"] and est.model_.loss == "logistic"
    proba = est.predict_proba(x[keep])
    assert proba.shape == (keep.sum(), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    decision = est.decision_function(x[keep])
    assert decision.shape == (keep.sum(),)
    np.testing.assert_array_equal(est.predict(x[keep]), est.classes_[(decision > 0).astype(int)])
    assert est.score(x[keep], names[keep]) > 0.95


def test_multiclass_string_labels(blobs):
    x, names = blobs
    est = StreamGDClassifier().fit(x, names)
    assert list(est.classes_) == ["blue", "green", "red"] and est.model_.loss == "softmax"
    proba = est.predict_proba(x)
    assert proba.shape == (900, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(est.predict(x), est.classes_[proba.argmax(axis=1)])
    assert est.decision_function(x).shape == (900, 3)
    assert est.score(x, names) > 0.9
    # the fitted model predicts the labels themselves
    np.testing.assert_array_equal(est.model_.predict(x), est.predict(x))
    assert est.coef_.shape == (3, 2) and est.intercept_.shape == (3,)


def test_hinge_has_no_probabilities(blobs):
    x, names = blobs
    keep = names != "blue"
    est = StreamGDClassifier(loss="hinge")
    assert not hasattr(est, "predict_proba")
    est.fit(x[keep], names[keep])
    assert est.score(x[keep], names[keep]) > 0.95


def test_partial_fit_learns_a_class_its_first_rows_lack(blobs):
    x, names = blobs
    first = names != "blue"
    est = StreamGDClassifier(batch_size=64)
    with pytest.raises(ValueError, match="classes must be passed"):
        est.partial_fit(x[first], names[first])
    est.partial_fit(x[first], names[first], classes=["red", "green", "blue"])
    assert list(est.classes_) == ["blue", "green", "red"]
    for _ in range(3):
        est.partial_fit(x, names)
    assert est.score(x, names) > 0.9
    with pytest.raises(ValueError, match="not the same"):
        est.partial_fit(x, names, classes=["red", "green"])
    with pytest.raises(ValueError, match="not in classes"):
        est.partial_fit(x[:3], np.array(["red", "pink", "red"]))


# -- weights -------------------------------------------------------------------------------------
def test_sample_weight_is_weighted_least_squares(regression):
    x, y = regression
    w = np.random.default_rng(8).uniform(0.0, 3.0, size=600)
    est = StreamGDRegressor(batch_size=600, schedule="constant", epochs=3)
    est.fit(x, y, sample_weight=w)
    design = np.column_stack([x, np.ones(600)]) * np.sqrt(w)[:, None]
    solution = np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)[0]
    np.testing.assert_allclose(est.coef_, solution[:3], rtol=1e-6)
    assert est.intercept_ == pytest.approx(solution[3], rel=1e-6)
    assert est.model_.spec.weighting is not None
    with pytest.raises(ValueError, match="zero"):
        est.fit(x, y, sample_weight=np.zeros(600))
    with pytest.raises(InputError, match="weight"):
        est.fit(x, y, sample_weight=-w)


def test_class_weight_is_sample_weight_by_class(blobs):
    x, names = blobs
    by_class = StreamGDClassifier(class_weight={"red": 3.0}).fit(x, names)
    as_text = StreamGDClassifier(class_weight="red=3").fit(x, names)
    by_row = StreamGDClassifier().fit(x, names, sample_weight=np.where(names == "red", 3.0, 1.0))
    np.testing.assert_allclose(by_class.coef_, by_row.coef_, rtol=1e-12)
    np.testing.assert_array_equal(by_class.coef_, as_text.coef_)
    StreamGDClassifier(class_weight="balanced").fit(x, names)
    with pytest.raises(ParameterError, match="'pink', which is not a class"):
        StreamGDClassifier(class_weight={"pink": 2.0}).fit(x, names)


def test_partial_fit_with_sample_weight(regression):
    x, y = regression
    w = np.where(np.arange(600) % 2, 2.0, 0.5)
    est = StreamGDRegressor(batch_size=50)
    est.partial_fit(x[:300], y[:300], sample_weight=w[:300])
    est.partial_fit(x[300:], y[300:], sample_weight=w[300:])
    assert est.state_.step == 12
    ones, as_ones = (
        clone(est).partial_fit(x[:300], y[:300], sample_weight=np.ones(300)) for _ in range(2)
    )
    ones.partial_fit(x[300:], y[300:])  # weighted from the first call on: unweighted is 1
    as_ones.partial_fit(x[300:], y[300:], sample_weight=np.ones(300))
    np.testing.assert_array_equal(ones.coef_, as_ones.coef_)
    unweighted = StreamGDRegressor().partial_fit(x[:300], y[:300])
    with pytest.raises(ParameterError, match="not given to the first partial_fit"):
        unweighted.partial_fit(x[300:], y[300:], sample_weight=w[300:])


# -- pickling and saving -----------------
def test_pickle_round_trip_and_model_file(blobs, tmp_path):
    x, names = blobs
    est = StreamGDClassifier(epochs=2).fit(x, names)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(x), est.predict_proba(x))
    np.testing.assert_array_equal(again.predict(x), est.predict(x))
    again.partial_fit(x[:100], names[:100])  # the state came along too
    est.model_.save(str(tmp_path / "m.npz"))
    loaded = streamgd.load(str(tmp_path / "m.npz"))
    np.testing.assert_array_equal(loaded.predict(x), est.predict(x))


# -- in scikit-learn's tools --------------------------------------------------------------------
def test_pipeline_and_grid_search(regression):
    x, y = regression
    pipe = make_pipeline(StandardScaler(), StreamGDRegressor(batch_size=64))
    grid = GridSearchCV(
        pipe, {"streamgdregressor__lr": [0.01, 1.0], "streamgdregressor__l2": [0.0, 0.5]}, cv=3
    )
    grid.fit(x, y)
    assert grid.best_params_ == {"streamgdregressor__lr": 1.0, "streamgdregressor__l2": 0.0}
    assert grid.best_score_ > 0.95
    assert grid.predict(x).shape == (600,)


def test_classifier_in_a_grid_search(blobs):
    x, names = blobs
    grid = GridSearchCV(StreamGDClassifier(), {"l2": [0.0, 0.5]}, cv=3).fit(x, names)
    assert grid.best_params_ == {"l2": 0.0}
    assert grid.score(x, names) > 0.9


# -- files -----------------
@pytest.fixture
def parquet_files(tmp_path, regression):
    x, y = regression
    paths = []
    for i in range(6):
        part = slice(100 * i, 100 * (i + 1))
        table = pa.table({"a": x[part, 0], "b": x[part, 1], "c": x[part, 2], "y": y[part]})
        paths.append(str(tmp_path / f"part-{i}.parquet"))
        pq.write_table(table, paths[-1])
    return paths


def test_fit_on_files(parquet_files, regression):
    x, y = regression
    est = StreamGDRegressor(target="y", batch_size=64).fit(parquet_files)
    assert list(est.feature_names_in_) == ["a", "b", "c"] and est.n_features_in_ == 3
    model = streamgd.fit(parquet_files, target="y", batch_size=64)
    np.testing.assert_array_equal(est.coef_, model.coef_)
    predictions = est.predict(parquet_files)  # streamed, in reading order
    np.testing.assert_allclose(predictions, model.predict(x), rtol=1e-12)
    r2 = 1 - ((y - predictions) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert est.score(parquet_files) == pytest.approx(r2, rel=1e-9)
    with pytest.raises(ParameterError, match="y=None"):
        est.fit(parquet_files, y)


def test_weight_column_of_files(tmp_path, regression):
    x, y = regression
    w = np.random.default_rng(8).uniform(0.0, 3.0, size=600)
    path = str(tmp_path / "weighted.parquet")
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y, "w": w}), path)
    on_files = StreamGDRegressor(target="y", weight="w", batch_size=64).fit(path)
    in_memory = StreamGDRegressor(batch_size=64).fit(x, y, sample_weight=w)
    assert list(on_files.feature_names_in_) == ["a", "b", "c"]
    np.testing.assert_allclose(on_files.coef_, in_memory.coef_, rtol=1e-12)


def test_grid_search_over_files(parquet_files):
    """Folds of a list of files are subsets of the files; nothing is loaded whole."""
    grid = GridSearchCV(
        StreamGDRegressor(target="y", batch_size=64), {"l2": [0.0, 0.5]}, cv=KFold(3)
    )
    grid.fit(parquet_files)
    assert grid.best_params_ == {"l2": 0.0} and grid.best_score_ > 0.95
    assert grid.best_estimator_.predict(parquet_files[:2]).shape == (200,)


def test_classifier_on_files(tmp_path, blobs):
    x, names = blobs
    path = str(tmp_path / "blobs.parquet")
    pq.write_table(pa.table({"u": x[:, 0], "v": x[:, 1], "colour": names}), path)
    frame = pd.DataFrame(x, columns=["u", "v"])  # the files' names, as scikit-learn checks
    est = StreamGDClassifier(target="colour").fit(path)
    assert list(est.classes_) == ["blue", "green", "red"] and est.model_.loss == "softmax"
    assert est.score(path) == pytest.approx(est.score(frame, names))
    np.testing.assert_array_equal(est.predict(path), est.predict(frame))
    assert est.predict_proba(path).shape == (900, 3)

    binary = str(tmp_path / "binary.parquet")
    keep = names != "blue"
    flags = (names[keep] == "red").astype(np.int64)
    pq.write_table(pa.table({"u": x[keep, 0], "v": x[keep, 1], "label": flags}), binary)
    est = StreamGDClassifier(target="label").fit(binary)
    assert list(est.classes_) == [0, 1] and est.model_.loss == "logistic"
    assert est.score(binary) > 0.95
    np.testing.assert_array_equal(est.predict(binary), est.predict(frame[keep]))
    with pytest.raises(ParameterError, match="fitted on files"):
        est.partial_fit(frame[keep], flags)
    two = str(tmp_path / "two.parquet")
    pq.write_table(pa.table({"u": x[keep, 0], "v": x[keep, 1], "colour": names[keep]}), two)
    assert StreamGDClassifier(target="colour").fit(two).model_.loss == "softmax"
    with pytest.raises(ParameterError, match="reads the files' target as 0/1"):
        StreamGDClassifier(target="colour", loss="hinge").fit(two)
