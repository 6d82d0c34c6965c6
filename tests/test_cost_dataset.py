"""Which dataset ``confkd_benchmark_cost`` times (study/cost_dataset.py): ``-d``/``-c``/``-p`` resolved on a real
preprocessed folder (the planned synthetic dataset 990), the link folder the workers read, and the clear errors
for what is missing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.study import benchmark_cost
from nnunetv2_confkd.study.cost_dataset import find_preprocessed, preprocessed_dataset

NAME = "Dataset990_ConfKDSynthetic"


def _copy_with_plans(planned_dataset, root: Path, edit) -> Path:
    """A dataset folder under ``root`` linking every entry of the planned one, with ``edit(plans)`` applied to a copy
    of its plans."""
    folder = root / NAME
    folder.mkdir(parents=True)
    for entry in planned_dataset.preprocessed.iterdir():
        if entry.name != "nnUNetPlans.json":
            (folder / entry.name).symlink_to(entry)
    plans = json.loads((planned_dataset.preprocessed / "nnUNetPlans.json").read_text())
    edit(plans)
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    return folder


@pytest.mark.parametrize("dataset", ["990", NAME, "ConfKDSynthetic"])
def test_a_preprocessed_dataset_is_found_by_id_or_name_and_read_through_links(planned_dataset, tmp_path, dataset):
    source = planned_dataset.preprocessed
    before = sorted(p.name for p in source.iterdir())
    ds = preprocessed_dataset(dataset, "2d", "nnUNetPlans", str(source.parent), tmp_path / "preprocessed")
    plans = json.loads((source / "nnUNetPlans.json").read_text())["configurations"]["2d"]
    assert (ds.name, ds.dataset_id, ds.source, ds.config, ds.plans, ds.synthetic) == (
        NAME, 990, source, "2d", "nnUNetPlans", False)
    assert ds.folder == tmp_path / "preprocessed" / NAME
    assert (ds.configuration["patch_size"], ds.configuration["batch_size"]) == (plans["patch_size"],
                                                                             plans["batch_size"])
    for entry in ds.folder.iterdir():  # every entry a link into the real folder, which stays as it was
        assert entry.is_symlink() and Path(os.readlink(entry)) == (source / entry.name).resolve()
    assert sorted(p.name for p in ds.folder.iterdir()) == before == sorted(p.name for p in source.iterdir())


def test_an_inheriting_configuration_is_resolved(planned_dataset, tmp_path):
    def add_reduced(plans):
        plans["configurations"]["2d_cpu"] = {"inherits_from": "2d", "batch_size": 3}

    _copy_with_plans(planned_dataset, tmp_path / "pre", add_reduced)
    ds = preprocessed_dataset("990", "2d_cpu", "nnUNetPlans", str(tmp_path / "pre"), tmp_path / "work")
    base = json.loads((planned_dataset.preprocessed / "nnUNetPlans.json").read_text())["configurations"]["2d"]
    assert ds.configuration["batch_size"] == 3
    assert ds.configuration["patch_size"] == base["patch_size"]
    assert ds.configuration["data_identifier"] == base["data_identifier"]


def test_a_missing_configuration_is_a_clear_error(planned_dataset, tmp_path):
    with pytest.raises(ConfKDInputError) as e:
        preprocessed_dataset("990", "2d_cpu", "nnUNetPlans", str(planned_dataset.preprocessed.parent), tmp_path)
    message = str(e.value)
    assert "'2d_cpu' is not in" in message and "nnUNetPlans.json" in message
    assert "['2d', '3d_fullres']" in message
    assert "nnUNetv2_plan_and_preprocess -d ID -c 2d_cpu" in message and "confkd_benchmark --preset cpu" in message
    assert not (tmp_path / NAME).exists()  # refused before the link folder is made


def test_the_command_exits_with_the_message_instead_of_a_traceback(planned_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(planned_dataset.preprocessed.parent))
    with pytest.raises(SystemExit) as e:
        benchmark_cost.main(["-d", "990", "-c", "2d_cpu", "-device", "cpu", "-o", str(tmp_path / "out")])
    assert str(e.value).startswith("confkd_benchmark_cost: configuration '2d_cpu' is not in ")
    assert not (tmp_path / "out" / "runs").exists()


def test_missing_plans_data_folder_or_cases_are_named_with_the_fix(planned_dataset, tmp_path):
    root = str(planned_dataset.preprocessed.parent)
    with pytest.raises(ConfKDInputError, match=r"nnUNetPlansX\.json is missing \(plans found: \['nnUNetPlans'\]\)"):
        preprocessed_dataset("990", "2d", "nnUNetPlansX", root, tmp_path / "w")

    def unprocessed(plans):
        plans["configurations"]["2d_big"] = {"inherits_from": "2d", "data_identifier": "nnUNetPlans_2d_big"}

    _copy_with_plans(planned_dataset, tmp_path / "a", unprocessed)
    with pytest.raises(ConfKDInputError) as e:
        preprocessed_dataset("990", "2d_big", "nnUNetPlans", str(tmp_path / "a"), tmp_path / "w")
    assert f"{tmp_path / 'a' / NAME / 'nnUNetPlans_2d_big'} is missing" in str(e.value)
    assert "run nnUNetv2_preprocess -d 990 -c 2d_big -plans_name nnUNetPlans" in str(e.value)

    def partial(plans):
        plans["configurations"]["2d_part"] = {"inherits_from": "2d", "data_identifier": "part"}

    folder = _copy_with_plans(planned_dataset, tmp_path / "b", partial)
    data = planned_dataset.preprocessed / json.loads(
        (planned_dataset.preprocessed / "nnUNetPlans.json").read_text())["configurations"]["2d"]["data_identifier"]
    (folder / "part").mkdir()
    for f in sorted(data.iterdir())[:3]:  # one case: data, segmentation and properties file
        (folder / "part" / f.name).symlink_to(f)
    n = json.loads((folder / "dataset.json").read_text())["numTraining"]
    with pytest.raises(ConfKDInputError, match=rf"holds 1 of the {n} preprocessed training cases \(missing e\.g\. "):
        preprocessed_dataset("990", "2d_part", "nnUNetPlans", str(tmp_path / "b"), tmp_path / "w")


def test_an_unknown_dataset_or_unset_folder_is_named(planned_dataset, tmp_path):
    with pytest.raises(ConfKDInputError, match=rf"dataset '991': no matching folder .*has \['{NAME}'\]"):
        find_preprocessed(planned_dataset.preprocessed.parent, "991")
    with pytest.raises(ConfKDInputError, match=r"\$nnUNet_preprocessed is not set"):
        preprocessed_dataset("990", "2d", "nnUNetPlans", None, tmp_path)


def test_without_d_the_synthetic_dataset_is_the_default():
    assert benchmark_cost.parse_args([]).synthetic
    assert benchmark_cost.parse_args(["--synthetic", "-d", "992"]).synthetic
    args = benchmark_cost.parse_args(["-d", "502", "-c", "2d_cpu", "-p", "P"])
    assert (args.synthetic, args.dataset, args.config, args.plans) == (False, "502", "2d_cpu", "P")
