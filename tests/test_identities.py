"""Dataset layouts: patient / study IDs from the official file layouts, and the official test predicates."""

from __future__ import annotations

import pickle

import pytest

from ssl_radiology.data.identities import Chexpert, FileNamePattern, MedMnist, Mimic, Nih, layout
from ssl_radiology.errors import UserError


def test_ids_come_from_each_layout():
    assert Chexpert().identify("train/patient00001/study2/view1_frontal.jpg") == (
        "chexpert/patient00001", "chexpert/patient00001/study2"
    )  # fmt: skip
    assert Chexpert().identify("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg")[0] == (
        "chexpert/patient64541"
    )
    assert Nih().identify("images_003/images/00000042_007.png") == ("nih/42", "nih/42/7")
    assert Mimic().identify("files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg") == (
        "mimic/10000032", "mimic/50414267"
    )  # fmt: skip
    assert MedMnist().identify("chestmnist/val/000012.png") == ("medmnist/chestmnist/val/000012",) * 2
    assert FileNamePattern(r"^(P\d+)_").identify("normal/P7_x.png") == ("pattern/P7", None)
    for unknown in (Chexpert(), Nih(), Mimic()):  # not the layout: prepare's own keys apply
        assert unknown.identify("misc/readme.png") == (None, None)
    assert pickle.loads(pickle.dumps(Mimic().identify))("files/p11/p11000011/s1/a.jpg")[0] == "mimic/11000011"


def test_official_test_predicates(tmp_path):
    is_test = Chexpert().official_test(tmp_path)
    assert is_test("valid/patient64541/study1/view1_frontal.jpg") and is_test(
        "test/patient64741/study1/v.jpg"
    )
    assert not is_test("train/patient00001/study1/view1_frontal.jpg")
    with pytest.raises(UserError, match=r"no test_list\.txt .* include_test: true"):
        Nih().official_test(tmp_path)
    (tmp_path / "test_list.txt").write_text("00000042_007.png\n")
    assert Nih().official_test(tmp_path)("images_003/images/00000042_007.png")
    with pytest.raises(UserError, match=r"mimic-cxr-2\.0\.0-split\.csv\(\.gz\)"):
        Mimic().official_test(tmp_path)
    (tmp_path / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\nab-cd,1,2,test\nef,1,2,train\n"
    )
    files = tmp_path / "files"  # ROOT may also be the files/ folder itself
    files.mkdir()
    assert Mimic().official_test(files)("files/p10/p2/s1/ab-cd.jpg") and not Mimic().official_test(files)(
        "x/ef.jpg"
    )
    assert MedMnist().official_test(tmp_path)("chestmnist/test/000001.png")
    with pytest.raises(UserError, match="unknown dataset layout 'cifar'"):
        layout("cifar")
