"""MDETR's release table: addresses, cache names and the architectures they name."""

from __future__ import annotations

from ovseg.model_zoo.mdetr_release import MDETR_RELEASES, release_candidates, release_url


def test_every_release_has_an_address_a_cache_name_and_a_known_backbone():
    from ovseg.models.detectors.mdetr_backbone import RESNETS

    for name, release in MDETR_RELEASES.items():
        assert release_url(name).startswith("https://zenodo.org/record/4721981/files/")
        assert release_url(name).endswith(release["file"].replace("+", "%2B"))
        candidates = release_candidates(name)
        assert candidates[0].name == release["file"]
        assert all(path.parent.name == "checkpoints" for path in candidates)
        assert release["backbone"] in RESNETS or release["backbone"].startswith("timm_tf_")
    plus = release_candidates("mdetr_resnet101_refcocoplus")
    # torch hub names the file after the URL's path, still quoted
    assert [p.name for p in plus] == [
        "refcoco+_resnet101_checkpoint.pth",
        "refcoco%2B_resnet101_checkpoint.pth",
    ]
