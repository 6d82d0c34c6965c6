"""Portable paths and commands (study/provenance.py): what records and reports name instead of the machine's folders."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from nnunetv2_confkd.study.provenance import portable_command, portable_path

STUDY = "/srv/study/out"
ENV = {"nnUNet_raw": "/data/nnunet/raw", "nnUNet_preprocessed": "/data/nnunet/pre",
       "nnUNet_results": "/data/nnunet/raw/results"}  # results inside raw: the deeper folder wins


@pytest.mark.parametrize(("path", "expected"), [
    ("/srv/study/out", "."),
    ("/srv/study/out/", "."),
    ("/srv/study/out/runs/D/a.json", "runs/D/a.json"),
    ("/srv/study/out/../out/runs", "runs"),
    ("/data/nnunet/raw", "$nnUNet_raw"),
    ("/data/nnunet/raw/Dataset501_ACDC/imagesTs", "$nnUNet_raw/Dataset501_ACDC/imagesTs"),
    ("/data/nnunet/pre/Dataset501_ACDC", "$nnUNet_preprocessed/Dataset501_ACDC"),
    ("/data/nnunet/raw/results/Dataset501_ACDC", "$nnUNet_results/Dataset501_ACDC"),
    ("/data/nnunet/rawer", "../../../data/nnunet/rawer"),  # a name prefix is not a parent folder
    ("/srv/study/cost", "../cost"),
    ("/srv/study/outside", "../outside"),
])
def test_portable_path(path, expected):
    assert portable_path(path, STUDY, ENV) == expected
    assert portable_path(Path(path), Path(STUDY), ENV) == expected


def test_portable_path_prefers_the_study_folder_and_takes_relative_paths_from_cwd():
    # a study folder inside nnUNet_results: its own paths are written relative to it
    assert portable_path("/data/nnunet/raw/results/s/runs", "/data/nnunet/raw/results/s", ENV) == "runs"
    assert portable_path("out/runs", STUDY, ENV, cwd="/srv/study") == "runs"
    assert portable_path("../pre/D", STUDY, ENV, cwd="/data/nnunet/raw") == "$nnUNet_preprocessed/D"
    assert portable_path("out/runs", STUDY, ENV) == "out/runs"  # no cwd: a relative path is left as it is
    assert portable_path("/x", "study", ENV, cwd="/x") == ".."
    with pytest.raises(ValueError, match="relative"):
        portable_path("/x", "study", ENV)
    assert portable_path("/data/nnunet/raw/D", STUDY, {}) == "../../../data/nnunet/raw/D"  # variable not set
    assert portable_path("/data/nnunet/raw/D", STUDY, {"nnUNet_raw": ""}) == "../../../data/nnunet/raw/D"


def test_portable_command_rewrites_path_options_and_absolute_arguments():
    argv = ["confkd_benchmark", "--preset", "cpu", "-device", "cpu", "--out", "/srv/study/out", "--nsd-tolerance",
            "2", "-np", "1", "-d", "501", "-tr", "nnUNetTrainerStrongOnly", "--extra", "500:nnUNetTrainer"]
    assert portable_command(argv, STUDY, ENV, path_options=("-o", "--out")) == (
        "confkd_benchmark --preset cpu -device cpu --out . --nsd-tolerance 2 -np 1 -d 501 -tr "
        "nnUNetTrainerStrongOnly --extra 500:nnUNetTrainer")
    # relative values of path options from cwd, absolute arguments anywhere, --option=VALUE forms
    argv = ["prog", "-o", "study/out", "--workdir=study/cost", "-i", "/data/nnunet/raw/D/imagesTs",
            "--x=/srv/study/out/a", "-m", "model"]
    assert portable_command(argv, STUDY, ENV, cwd="/srv", path_options=("-o", "--workdir")) == (
        "prog -o . --workdir=../cost -i $nnUNet_raw/D/imagesTs --x=a -m model")


def test_portable_command_quotes_like_shlex_and_keeps_variables_expandable():
    argv = ["prog", "--name", "two words", "-o", "/srv/study/out/my runs", "-i", "/data/nnunet/raw/a b"]
    command = portable_command(argv, STUDY, ENV, path_options=("-o",))
    assert command == "prog --name 'two words' -o 'my runs' -i $nnUNet_raw'/a b'"
    words = shlex.split(command)
    assert words[2] == "two words" and words[4] == "my runs" and words[6] == "$nnUNet_raw/a b"
    # a value that only looks like an option stays a path value; an option without paths is untouched
    assert portable_command(["prog", "-o", "-weird"], STUDY, ENV, cwd=STUDY, path_options=("-o",)) == "prog -o -weird"
    assert portable_command(["prog", "-o"], STUDY, ENV, path_options=("-o",)) == "prog -o"
