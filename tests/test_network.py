"""Tests of the link-table reader, road-class inference and margin selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gridgov.errors import DataFileError
from gridgov.roads import SPEEDS_KMH, read_link_table, select_with_margin
from gridgov.settings import get_settings

CHENGDU = get_settings().data_dir / "chengdu"


@pytest.fixture(scope="module")
def chengdu() -> tuple:
    return read_link_table(CHENGDU / "roads_nodes.csv", CHENGDU / "roads_links.csv")


def _write(tmp_path: Path, nodes: str, links: str) -> tuple[Path, Path]:
    (tmp_path / "n.csv").write_text(nodes)
    (tmp_path / "l.csv").write_text(links)
    return tmp_path / "n.csv", tmp_path / "l.csv"


def test_reads_the_chengdu_table(chengdu: tuple) -> None:
    nodes, links = chengdu
    assert len(nodes) == 1901 and len(links) == 5941
    assert nodes.crs.to_epsg() == 4326 and links.crs.to_epsg() == 4326
    assert int(nodes["in_district"].sum()) == 349
    first = links.iloc[0]
    assert (first["u"], first["v"]) == (0, 48)
    assert first["length_m"] == pytest.approx(1179.207157)
    assert set(links["class_source"]) == {"inferred", "default"}
    assert (links.geometry.geom_type == "LineString").all()


def test_oneway_means_no_reverse_link(chengdu: tuple) -> None:
    _, links = chengdu
    pairs = set(zip(links["u"], links["v"], strict=True))
    expected = [(v, u) not in pairs for u, v in zip(links["u"], links["v"], strict=True)]
    assert links["oneway"].tolist() == expected
    assert int(links["oneway"].sum()) == 159


def test_rings_are_closed_tangential_loops_of_the_published_length(chengdu: tuple) -> None:
    _, links = chengdu
    for name, km in (("一环路", 19.4), ("二环路", 28.3), ("三环路", 51.0), ("绕城高速", 85.0)):
        ring = links[links["road_name"] == name]
        assert len(ring) > 20, name
        # Both directions of a two-way ring are labelled, so half the sum is the loop length.
        assert ring["length_m"].sum() / 2000 == pytest.approx(km, rel=0.12), name
        degree = pd.concat([ring["u"], ring["v"]]).value_counts()
        assert (degree % 2 == 0).all(), name
    assert set(links.loc[links["road_name"] == "绕城高速", "road_class"]) == {"expressway"}
    assert set(links.loc[links["road_name"] == "", "road_class"]) == {"arterial"}
    assert (links.loc[links["class_source"] == "default", "road_name"] == "").all()


def test_speeds_follow_the_class_table(chengdu: tuple) -> None:
    _, links = chengdu
    for mode in ("drive", "bike", "walk"):
        expected = links["road_class"].map({c: s[mode] for c, s in SPEEDS_KMH.items()})
        assert np.array_equal(links[f"speed_{mode}_kmh"].to_numpy(), expected.to_numpy())
    assert (links["speed_drive_kmh"] > 0).all()


def test_missing_columns_are_named(tmp_path: Path) -> None:
    n, lk = _write(tmp_path, "Node,Lon,Lat\n0,104,30\n", "Node_Start,Node_End,Length\n")
    with pytest.raises(DataFileError, match=r"Longitude.*Latitude"):
        read_link_table(n, lk)


def test_unknown_nodes_are_all_listed(tmp_path: Path) -> None:
    n, lk = _write(
        tmp_path,
        "Node,Longitude,Latitude\n0,104.0,30.6\n1,104.01,30.6\n",
        "Node_Start,Node_End,Length\n0,1,900\n0,7,100\n9,1,100\n",
    )
    with pytest.raises(DataFileError, match=r"2 unknown node id\(s\): \[7, 9\]"):
        read_link_table(n, lk)


def test_bad_values_are_rejected(tmp_path: Path) -> None:
    n, lk = _write(
        tmp_path,
        "Node,Longitude,Latitude\n0,104.0,30.6\n1,x,30.6\n",
        "Node_Start,Node_End,Length\n0,1,900\n",
    )
    with pytest.raises(DataFileError, match="Longitude"):
        read_link_table(n, lk)
    n, lk = _write(
        tmp_path,
        "Node,Longitude,Latitude\n0,104.0,30.6\n1,104.01,30.6\n",
        "Node_Start,Node_End,Length\n0,1,-5\n",
    )
    with pytest.raises(DataFileError, match="non-positive"):
        read_link_table(n, lk)


def test_missing_file_is_a_data_file_error(tmp_path: Path) -> None:
    with pytest.raises(DataFileError):
        read_link_table(tmp_path / "nope.csv", tmp_path / "nope2.csv")


def test_small_table_without_rings_is_all_default(tmp_path: Path) -> None:
    n, lk = _write(
        tmp_path,
        "Node,Longitude,Latitude\n0,104.0,30.6\n1,104.01,30.6\n2,104.01,30.61\n",
        "Node_Start,Node_End,Length\n0,1,960\n1,0,960\n1,2,1100\n",
    )
    nodes, links = read_link_table(n, lk)
    assert (links["class_source"] == "default").all()
    assert links["oneway"].tolist() == [False, False, True]
    assert not nodes["in_district"].any()


def test_select_with_margin(chengdu: tuple) -> None:
    nodes, links = chengdu
    inside = nodes["in_district"].to_numpy()
    kept_nodes, kept_links = select_with_margin(nodes, links, inside, 1000.0)
    metric = nodes.to_crs(get_settings().metric_crs).geometry
    dist = np.array([metric[inside].distance(p).min() for p in metric])
    assert set(kept_nodes.index) == set(np.flatnonzero(dist <= 1000.0))
    assert len(kept_nodes) > inside.sum()
    ids = set(kept_nodes["node_id"])
    assert kept_links["u"].isin(ids).all() and kept_links["v"].isin(ids).all()
    both = links["u"].isin(ids) & links["v"].isin(ids)
    assert len(kept_links) == int(both.sum())
    zero_nodes, _ = select_with_margin(nodes, links, inside, 0.0)
    assert len(zero_nodes) == int(inside.sum())
    with pytest.raises(ValueError, match="inside_mask"):
        select_with_margin(nodes, links, inside[:-1], 10.0)
