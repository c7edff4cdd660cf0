"""``ovseg predict FOLDER``: bad files are reported, not fatal; resumable; unique output names."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.cli import main, output_stems

# The embedded default preset; a few classes keep the text side small.
BASE = ["predict", "--preset", "shapes-tiny", "--vocab", "red circle,blue square,sand", "--quiet"]


def _image(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Good images (nested, and a stem clash) and three bad ones."""
    folder = tmp_path / "in"
    (folder / "sub" / "deeper").mkdir(parents=True)
    _image(0).save(folder / "scene.jpg")
    _image(1).save(folder / "scene.png")
    _image(2).save(folder / "sub" / "a.png")
    _image(3).save(folder / "sub" / "deeper" / "b.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "sub" / "text.png").write_text("this is not a picture\n")
    jpeg = io.BytesIO()
    _image(4, (64, 64)).save(jpeg, format="JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_bad_files_are_reported_and_good_ones_done(mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*BASE[:1], str(mixed_folder), *BASE[1:], "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "3 image(s) failed" in err and "Traceback" not in err
    for name in ("empty.png", "sub/text.png", "truncated.jpg"):
        assert f"  {name}: " in err

    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"images": 7, "ok": 4, "failed": 3, "skipped": 0}
    assert report["complete"] is True
    assert sorted(f["source"] for f in report["failed"]) == [
        "empty.png",
        "sub/text.png",
        "truncated.jpg",
    ]
    assert all(f["reason"] for f in report["failed"])
    done = {entry["source"]: entry["outputs"] for entry in report["ok"]}
    assert sorted(done) == ["scene.jpg", "scene.png", "sub/a.png", "sub/deeper/b.png"]
    # nested folders keep their structure; a stem clash puts the extension in the stem
    assert done["sub/deeper/b.png"]["json"] == "sub/deeper/b.json"
    assert done["scene.jpg"]["json"] == "scene_jpg.json"
    assert done["scene.png"]["labels"] == "scene_png_labels.png"
    for source, outputs in done.items():
        for rel in outputs.values():
            assert (out / rel).is_file()
        assert json.loads((out / outputs["json"]).read_text())["source"] == source
    labels = np.asarray(Image.open(out / "scene_jpg_labels.png"))
    assert labels.shape == (40, 48) and labels.max() <= 2
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_skip_existing_resumes_only_the_missing_images(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        _image(index).save(folder / f"img{index}.png")
    out = tmp_path / "out"
    assert main([*BASE[:1], str(folder), *BASE[1:], "--out", str(out)]) == 0
    # an interrupted run: img1's JSON (written last) is missing, its PNGs are there
    (out / "img1.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "keep-me.txt").write_text("an earlier result")
    assert main([*BASE[:1], str(folder), *BASE[1:], "--out", str(out), "--skip-existing"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"images": 3, "ok": 1, "failed": 0, "skipped": 2}
    assert [entry["source"] for entry in report["ok"]] == ["img1.png"]
    assert (out / "img1.json").is_file()
    for name in ("img0.json", "img0_labels.png", "img2_overlay.png"):
        assert (out / name).stat().st_mtime_ns == before[name]  # not rewritten
    assert (out / "keep-me.txt").read_text() == "an earlier result"  # nothing deleted


def test_out_inside_the_input_folder_is_not_read_back(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _image(0).save(folder / "x.png")
    out = folder / "results"
    assert main([*BASE[:1], str(folder), *BASE[1:], "--out", str(out)]) == 0
    assert main([*BASE[:1], str(folder), *BASE[1:], "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [entry["source"] for entry in report["ok"]] == ["x.png"]


def test_single_file_keeps_the_plain_names(tmp_path):
    _image(0).save(tmp_path / "photo.png")
    out = tmp_path / "o"
    assert main([*BASE[:1], str(tmp_path / "photo.png"), *BASE[1:], "--out", str(out)]) == 0
    assert json.loads((out / "photo.json").read_text())["source"] == "photo.png"
    assert not (out / "report.json").exists()
    stamp = (out / "photo.json").stat().st_mtime_ns
    argv = [*BASE[:1], str(tmp_path / "photo.png"), *BASE[1:], "--out", str(out)]
    assert main([*argv, "--skip-existing"]) == 0
    assert (out / "photo.json").stat().st_mtime_ns == stamp


def test_output_stems_are_unique_and_plain_without_a_clash():
    rels = [Path(p) for p in ("a.png", "b.jpg", "s/x.png", "Scene.JPG", "scene.png", "c.png")]
    rels.append(Path("scene_png.jpg"))  # collides with scene.png's clash name
    stems = output_stems(rels)
    assert stems[Path("a.png")] == Path("a") and stems[Path("s/x.png")] == Path("s/x")
    assert stems[Path("Scene.JPG")] == Path("Scene_JPG")
    assert stems[Path("scene_png.jpg")] == Path("scene_png")
    assert stems[Path("scene.png")] == Path("scene_png_2")
    assert len({str(s).casefold() for s in stems.values()}) == len(rels)
    # report.json belongs to the run: a top-level report.* image moves aside, a nested one not
    stems = output_stems([Path("report.png"), Path("sub/report.png")])
    assert stems == {
        Path("report.png"): Path("report_png"),
        Path("sub/report.png"): Path("sub/report"),
    }


def test_side_by_side_puts_the_image_left_of_the_overlay(tmp_path):
    from PIL import Image

    from ovseg.cli import main

    scene = Path(__file__).resolve().parents[1] / "demo" / "examples" / "shapes_scene.jpg"
    plain, both = tmp_path / "plain", tmp_path / "both"
    assert main(["predict", str(scene), "--out", str(plain), "--quiet"]) == 0
    assert main(["predict", str(scene), "--out", str(both), "--side-by-side", "--quiet"]) == 0
    width = Image.open(plain / "shapes_scene_overlay.png").size[0]
    wide = Image.open(both / "shapes_scene_overlay.png")
    assert (
        wide.size[0] > width
        and wide.size[1] == Image.open(plain / "shapes_scene_overlay.png").size[1]
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_worker_threads_write_the_same_files_as_the_plain_loop(mixed_folder, tmp_path, capsys):
    plain, fast = tmp_path / "plain", tmp_path / "fast"
    folder = str(mixed_folder)
    assert main([*BASE[:1], folder, *BASE[1:], "--out", str(plain), "--workers", "0"]) == 1
    assert main([*BASE[:1], folder, *BASE[1:], "--out", str(fast), "--workers", "3"]) == 1
    assert _files(plain) == _files(fast)  # labels, overlays, JSON, report.json byte for byte
    err = capsys.readouterr().err
    assert err.count("3 image(s) failed") == 2 and "Traceback" not in err


def test_a_failed_write_is_reported_for_its_image_and_the_rest_goes_on(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        _image(index).save(folder / f"img{index}.png")
    out = tmp_path / "out"
    (out / "img1_overlay.png").mkdir(parents=True)  # the overlay cannot be written
    assert main([*BASE[:1], str(folder), *BASE[1:], "--out", str(out), "--workers", "2"]) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"images": 3, "ok": 2, "failed": 1, "skipped": 0}
    assert [entry["source"] for entry in report["ok"]] == ["img0.png", "img2.png"]
    assert report["failed"][0]["source"] == "img1.png" and report["failed"][0]["reason"]
    assert not (out / "img1.json").exists()  # written last, so the image is redone on resume
    assert "  img1.png: " in capsys.readouterr().err


def test_negative_workers_are_refused(tmp_path, capsys):
    _image(0).save(tmp_path / "a.png")
    out = tmp_path / "o"
    assert (
        main([*BASE[:1], str(tmp_path / "a.png"), *BASE[1:], "--out", str(out), "--workers", "-1"])
        == 2
    )
    assert "--workers" in capsys.readouterr().err


def test_torchrun_shards_a_folder_and_matches_one_process(tmp_path, one_torch_thread):
    from tests.torchrun import REPO_ROOT, run_torchrun

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for index in range(5):
        _image(index).save(folder / ("sub" if index % 2 else ".") / f"img{index}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    one, two = tmp_path / "one", tmp_path / "two"
    args = [str(folder), *BASE[1:]]
    # one_torch_thread: one thread, as each torchrun process has; the thread count can change
    # the last bit of a float sum (mean scores in the JSON), sharding must change nothing else
    assert main([*BASE[:1], *args, "--out", str(one)]) == 1
    proc = run_torchrun(
        REPO_ROOT / "tests" / "torchrun_predict.py", *args, "--out", str(two), timeout=240
    )
    assert proc.stdout.count("1 image(s) failed") == 0  # the summary goes to stderr, once
    assert proc.stderr.count("1 image(s) failed:") == 1
    assert _files(one) == _files(two)
    report = json.loads((two / "report.json").read_text())
    assert report["counts"] == {"images": 6, "ok": 5, "failed": 1, "skipped": 0}


def test_folder_on_each_device_gives_the_cpu_labels(device, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        _image(index).save(folder / f"img{index}.png")
    want, got = tmp_path / "cpu", tmp_path / "here"
    assert main([*BASE[:1], str(folder), *BASE[1:], "--out", str(want), "--workers", "0"]) == 0
    args = ["--out", str(got), "--workers", "2", "--device", device.type]
    assert main([*BASE[:1], str(folder), *BASE[1:], *args]) == 0
    for index in range(3):
        a = np.asarray(Image.open(want / f"img{index}_labels.png"))
        b = np.asarray(Image.open(got / f"img{index}_labels.png"))
        # pinned, non-blocking copies and GPU kernels: labels may differ only at near-ties
        assert (a != b).mean() <= 0.01
