"""A model trained for the live path uses only inputs the historian gives at scoring time.

The twin history ``biotwin train`` learns from (quality.data.batch_history_from_twin) and the
history ``biotwin score`` builds from the store (quality.live.batch_history_from_historian)
must carry the same tags under the same names and the same context columns, or every live
score says "missing inputs".
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from connectors.historian import Historian
from connectors.twin_import import import_simulation
from quality.data import LIVE_CONTEXT, batch_history_from_twin, live_tags
from quality.errors import InputError
from quality.features import BatchFeaturizer
from quality.live import batch_history_from_historian

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "twin"
LOT_ATTRIBUTES = ["media_potency", "glucose_purity_pct", "squalene_peroxide_meq_per_kg"]


@pytest.fixture(scope="module")
def twin_history():
    """The sample twin output as ``biotwin train`` reads it (inputs for live scoring)."""
    return batch_history_from_twin(SAMPLE)


@pytest.fixture(scope="module")
def sample_historian(tmp_path_factory):
    """A store the sample twin output filled, as the ingest would have."""
    historian = Historian(tmp_path_factory.mktemp("live") / "historian")
    import_simulation(SAMPLE, historian)
    return historian


@pytest.fixture(scope="module")
def historian_history(sample_historian, config, twin_history):
    """The same batches as ``biotwin score`` reads them from a store the sample filled."""
    return batch_history_from_historian(
        sample_historian, config, batch_ids=twin_history.outcomes.index
    )


def test_a_batch_reads_the_same_bits_whatever_is_read_with_it(
    sample_historian, config, historian_history
):
    """Reading the historian is deterministic (same bins, bit for bit, on a second read),
    and a batch's bins do not depend on the other batches read with it: what the cluster's
    partitions rely on, and what makes a live batch's features those it was trained on."""
    ids = historian_history.outcomes.index
    again = batch_history_from_historian(sample_historian, config, batch_ids=ids)
    pd.testing.assert_frame_equal(again.bins, historian_history.bins, check_exact=True)
    few = list(ids[3:9])
    alone = batch_history_from_historian(sample_historian, config, batch_ids=few)
    within = historian_history.bins[historian_history.bins["batch_id"].isin(few)]
    pd.testing.assert_frame_equal(
        alone.bins.reset_index(drop=True), within.reset_index(drop=True), check_exact=True
    )


@pytest.fixture(scope="module")
def featurizer(twin_history):
    """The featurizer of a deviation model trained on the twin history."""
    return BatchFeaturizer().fit(twin_history, twin_history.labelled())


def test_every_context_input_of_a_twin_trained_model_is_in_the_historian_history(
    featurizer, historian_history
):
    context = [*featurizer.context_numeric, *featurizer.context_categories]
    assert context == LIVE_CONTEXT
    assert set(context) <= set(historian_history.context_cols)
    assert set(context) <= set(historian_history.outcomes.columns)
    X = featurizer.transform(historian_history, historian_history.outcomes.index, 0.5, once=True)
    for col in context:
        assert X[f"ctx|{col}"].notna().any(), col


def test_every_tag_of_a_twin_trained_model_is_in_the_historian_history(
    featurizer, twin_history, historian_history
):
    served = set(historian_history.bins["tag"])
    assert set(featurizer.tags) <= served
    # same names both ways (production.do, asset.production.agitator.age_h, ...)
    assert set(twin_history.bins["tag"]) == served
    assert {"production.do", "production.ph"} <= served
    assert any(t.startswith("asset.production.") for t in served)


def test_the_plant_configuration_names_the_tags_of_both_paths(
    config, twin_history, historian_history
):
    assert set(historian_history.bins["tag"]) <= live_tags(config)
    assert set(twin_history.bins["tag"]) <= live_tags(config)


def test_both_paths_name_the_same_production_unit(twin_history, historian_history):
    twin = twin_history.outcomes["production_unit"]
    live = historian_history.outcomes["production_unit"].reindex(twin.index)
    both = live.notna()
    assert both.sum() >= 0.9 * len(twin)
    assert (twin[both].astype(str) == live[both].astype(str)).all()


def test_lot_attributes_stay_available_to_benchmarks(twin_history):
    everything = batch_history_from_twin(SAMPLE, inputs="all")
    assert set(LOT_ATTRIBUTES) <= set(everything.context_cols)
    assert everything.outcomes["media_potency"].notna().any()
    assert not set(LOT_ATTRIBUTES) & set(twin_history.context_cols)
    assert not set(LOT_ATTRIBUTES) & set(twin_history.outcomes.columns)
    # the targets and the onset oracle are not inputs: both keep them
    for history in (everything, twin_history):
        assert {"titer_g_per_l", "droplet_z_avg_nm", "onset_h"} <= set(history.outcomes.columns)


def test_an_unknown_inputs_choice_is_refused():
    with pytest.raises(InputError, match=r"inputs: must be 'live' or 'all'; got 'lims'"):
        batch_history_from_twin(SAMPLE, inputs="lims")


def test_train_all_trains_the_deviation_model_on_live_inputs(monkeypatch):
    import quality.jobs as jobs

    seen = {}

    def train_deviation(history, **kw):
        seen["context"] = list(history.context_cols)
        seen["tags"] = set(history.bins["tag"])
        return "model", {}, {}

    class Registry:
        def register(self, model, meta):
            return f"{model}-v1"

    monkeypatch.setattr(jobs, "train_deviation", train_deviation)
    monkeypatch.setattr(jobs, "run_history_from_twin", lambda _dir: None)
    monkeypatch.setattr(jobs, "train_maintenance", lambda runs, **kw: ("asset-model", {}, {}))
    done = jobs.train_all(SAMPLE, Registry())
    assert done["deviation"][0] == "model-v1"
    assert seen["context"] == LIVE_CONTEXT
    assert seen["tags"] <= live_tags()
    jobs.train_all(SAMPLE, Registry(), inputs="all")
    assert set(LOT_ATTRIBUTES) <= set(seen["context"])


def test_the_historian_history_holds_no_lot_attributes(historian_history):
    assert historian_history.context_cols == LIVE_CONTEXT
    assert not set(LOT_ATTRIBUTES) & set(historian_history.outcomes.columns)
