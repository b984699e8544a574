"""A living plant from the first minute: loaded history and the served twin on one timeline."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from asyncua import Client, ua
from conftest import write_users

from connectors.historian import Historian, HistorianError
from connectors.server import NAMESPACE_URI, TwinServer
from connectors.warm import (
    close_open_context,
    ensure_epoch,
    load_epoch,
    plant_config,
    resume_sample,
    warm_history,
)

NOW = datetime(2026, 12, 5, 10, 0, 17, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def warm(tmp_path_factory, config):
    """A store with three days of warm history ending at NOW."""
    root = tmp_path_factory.mktemp("warm")
    write_users(root / "users.toml")
    epoch, created = ensure_epoch(root, config, warm_days=3, seed=5, now=NOW)
    historian = Historian(root / "historian")
    warm_history(historian, config, epoch, until=NOW)
    return root, epoch, created, historian


def test_the_epoch_is_made_once_and_read_back(warm, config):
    root, epoch, created, _ = warm
    assert created
    assert epoch.start_time == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # floored to a sample
    again, created_again = ensure_epoch(root, config, warm_days=30, now=NOW + timedelta(days=9))
    assert not created_again and again == epoch


def test_a_bad_epoch_file_names_the_field(tmp_path):
    path = tmp_path / "epoch.json"
    path.write_text(json.dumps({"start": "yesterday", "seed": 1}))
    with pytest.raises(HistorianError, match=r"epoch\.start.*'yesterday'"):
        load_epoch(path)
    path.write_text(json.dumps({"start": "2026-01-01T00:00:00Z", "seed": "x"}))
    with pytest.raises(HistorianError, match=r"epoch\.seed.*'x'"):
        load_epoch(path)


def test_history_ends_now_and_the_server_continues_the_same_run(warm, config):
    root, epoch, _, historian = warm
    tags = historian.tags()
    last = tags["last_time"].max()
    assert NOW - timedelta(minutes=2) <= last <= NOW
    step = config.plant.sample_interval_min
    first = resume_sample(historian, epoch, step)
    assert pd.Timestamp(epoch.start_time) + pd.Timedelta(minutes=step * first) > last
    plant = plant_config(config, epoch)
    server = TwinServer(
        plant,
        "opc.tcp://127.0.0.1:4840/t/",
        root,
        seed=epoch.seed,
        start=epoch.start_time,
        horizon_days=2,
    )
    per = server._samples_per_horizon()
    readings, contexts = server._horizon(first // per)
    i = first % per
    # the sample before the seam, as stored, is the served run's sample there
    tag = "TIC-201.PV"
    unit = "BR-201"
    stored = historian.query([tag], start=last - pd.Timedelta(minutes=3 * step))
    r = readings[unit]
    assert i >= 3, "the seam fell on a horizon boundary: pick another NOW"
    assert stored["time"].iloc[-1] == pd.Timestamp(epoch.start_time) + pd.Timedelta(
        minutes=step * (first - 1)
    )
    served = r.values[r.tags.index(tag), i - len(stored) : i]
    np.testing.assert_allclose(stored["value"].to_numpy(), served, rtol=1e-12)
    # and the plant is busy at the seam: a unit runs a batch from the first served sample
    running = []
    for u, ctx in contexts.items():
        j = int(np.searchsorted(ctx.sample, i, side="right")) - 1
        if ctx.state[j] == "running" and ctx.batch_id[j]:
            running.append((u, ctx.batch_id[j]))
    assert running
    stored_batches = set(historian.batch_context()["batch_id"].dropna())
    assert {b for _, b in running} & stored_batches  # batches of the history go on


def test_open_context_records_are_closed_at_the_units_latest_sample(warm):
    _, _, _, historian = warm
    ctx = historian.batch_context()
    unit = ctx["unit"].iloc[-1]
    row = ctx[ctx["unit"] == unit].iloc[[-1]].copy()
    row["start_time"] = row["end_time"].fillna(row["start_time"]) + pd.Timedelta(seconds=1)
    row["end_time"] = pd.NaT
    row["state"] = "idle"
    historian.append_batch_context(row)
    assert historian.batch_context()["end_time"].isna().any()
    assert close_open_context(historian) >= 1
    after = historian.batch_context()
    assert not after["end_time"].isna().any()
    last = historian.tags().groupby("unit")["last_time"].max()
    closed = after[(after["unit"] == unit) & (after["start_time"] == row["start_time"].iloc[0])]
    assert closed["end_time"].iloc[0] == max(last[unit], row["start_time"].iloc[0])
    assert close_open_context(historian) == 0


def test_the_served_plant_is_busy_from_its_first_sample(warm, config):
    root, epoch, _, historian = warm
    plant = plant_config(config, epoch)
    first = resume_sample(historian, epoch, plant.plant.sample_interval_min)
    url = f"opc.tcp://127.0.0.1:{free_port()}/biotwin/"
    last = historian.tags()["last_time"].max()

    async def main():
        server = TwinServer(
            plant,
            url,
            root,
            seed=epoch.seed,
            start=epoch.start_time,
            speed=600,
            security="none",
            allow_anonymous=True,
        )
        await server.setup()
        job = asyncio.create_task(server.run(first_sample=first, until_samples=first + 5))
        await asyncio.wait_for(server.publishing_done.wait(), 120)
        async with Client(url) as client:
            idx = await client.get_namespace_index(NAMESPACE_URI)
            states = {}
            for unit in config.units:
                state = await client.get_node(ua.NodeId(f"{unit.id}.State", idx)).read_value()
                batch = await client.get_node(ua.NodeId(f"{unit.id}.BatchId", idx)).read_value()
                states[unit.id] = (state, batch)
            dv = await client.get_node(ua.NodeId("BR-201.TIC-201.PV", idx)).read_data_value()
        server.stop()
        await job
        return states, dv

    states, dv = asyncio.run(asyncio.wait_for(main(), 240))
    assert any(s == "running" and b for s, b in states.values()), states
    stamp = pd.Timestamp(dv.SourceTimestamp)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    assert last < stamp <= last + pd.Timedelta(minutes=10)  # right after the history
