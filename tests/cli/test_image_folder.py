"""data.format: folder — ImageFolder trees of PNG and JPEG files (written with PIL), end to end."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import cli_helpers as h

PIL = pytest.importorskip("PIL", reason="python3-pil (Debian) writes the test images")
from PIL import Image  # noqa: E402

TRAIN_N, TEST_N = 600, 200
CLASS_NAMES = [f"c{i}_{name}" for i, name in enumerate("abcdefghij")]


def folder_order(images, labels):
    """The order gputrain reads a tree in: class by class, files by name (= index here)."""
    order = np.argsort(labels, kind="stable")
    return images[order], labels[order]


def write_tree(root, arrays, kinds=("png",), rgb_every=0, size=None):
    """train/<class>/<index>.<ext>, test/...; every `rgb_every`-th image as RGB (grey replicated)."""
    for split, n in (("train", TRAIN_N), ("test", TEST_N)):
        images = arrays[f"{split}_images"][:n]
        labels = arrays[f"{split}_labels"][:n]
        for c in CLASS_NAMES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(images, labels)):
            pil = Image.fromarray(img, mode="L")
            if rgb_every and i % rgb_every == 0:
                pil = pil.convert("RGB")
            if size:
                pil = pil.resize(size, Image.BILINEAR)
            ext = kinds[i % len(kinds)]
            pil.save(root / split / CLASS_NAMES[label] / f"{i:05d}.{ext}",
                     **({"quality": 95} if ext == "jpg" else {}))
    return root


@pytest.fixture(scope="module")
def arrays():
    return h.make_synthetic(train_count=TRAIN_N, test_count=TEST_N)



def train(tmp_path, data_dir, out, extra=(), name="folder.yaml"):
    cfg = tmp_path / name
    cfg.write_text(h.config_text(data_dir, out, epochs=2).replace("format: idx", "format: folder"))
    return h.run_gputrain(["train", "--config", cfg] + list(extra))


def test_png_tree_trains_bitwise_as_the_same_pixels_in_idx(tmp_path, arrays):
    """Grey and RGB PNGs decode to exactly the pixels written: training on the tree gives bitwise
    the weights of training on IDX files holding the same images in the same order."""
    tree = write_tree(tmp_path / "tree", arrays, rgb_every=3)
    res = train(tmp_path, tree, tmp_path / "run-folder", name="a.yaml")
    h.assert_ok(res)
    idx = {}
    for split in ("train", "test"):
        n = TRAIN_N if split == "train" else TEST_N
        idx[f"{split}_images"], idx[f"{split}_labels"] = folder_order(
            arrays[f"{split}_images"][:n], arrays[f"{split}_labels"][:n])
    idx_dir = h.write_dataset(tmp_path / "idx", idx)
    cfg = h.write_config(tmp_path / "idx.yaml", idx_dir, tmp_path / "run-idx", epochs=2)
    h.assert_ok(h.run_gputrain(["train", "--config", cfg]))
    h.assert_bitwise_equal(tmp_path / "run-folder" / "model.safetensors",
                           tmp_path / "run-idx" / "model.safetensors")
    metrics = h.read_metrics(tmp_path / "run-folder" / "metrics.jsonl")
    assert metrics[-1]["test_acc"] > 0.7, metrics


def test_jpeg_and_png_mixed_train_cache_and_rebuild(tmp_path, arrays):
    tree = write_tree(tmp_path / "tree", arrays, kinds=("png", "jpg", "jpeg"), rgb_every=2)
    first = train(tmp_path, tree, tmp_path / "run1")
    h.assert_ok(first)
    caches = list(tree.glob(".gputrain-cache-*.bin"))
    assert len(caches) == 1, caches
    assert "from the cache" not in first.stdout
    assert h.read_metrics(tmp_path / "run1" / "metrics.jsonl")[-1]["test_acc"] > 0.7

    second = train(tmp_path, tree, tmp_path / "run2")
    h.assert_ok(second)
    assert "from the cache" in second.stdout, h.describe(second)
    h.assert_bitwise_equal(tmp_path / "run1" / "model.safetensors",
                           tmp_path / "run2" / "model.safetensors")

    # A changed file: a new cache replaces the stale one, and the change is seen.
    victim = sorted((tree / "train" / CLASS_NAMES[0]).iterdir())[0]
    Image.fromarray(np.zeros((h.SIDE, h.SIDE), np.uint8), mode="L").save(victim.with_suffix(".png"))
    victim.unlink() if victim.suffix != ".png" else None
    third = train(tmp_path, tree, tmp_path / "run3")
    h.assert_ok(third)
    assert "from the cache" not in third.stdout
    new_caches = list(tree.glob(".gputrain-cache-*.bin"))
    assert len(new_caches) == 1 and new_caches != caches, (caches, new_caches)


def test_wrong_size_is_an_error_naming_the_file_or_resized(tmp_path, arrays):
    tree = write_tree(tmp_path / "tree", arrays)
    odd = tree / "train" / CLASS_NAMES[3] / "odd.png"
    Image.fromarray(np.full((16, 20), 99, np.uint8), mode="L").save(odd)
    res = train(tmp_path, tree, tmp_path / "run")
    h.assert_user_error(res, must_contain=[str(odd), "20x16", "data.resize"])
    h.assert_no_outputs(tmp_path / "run")
    h.assert_ok(train(tmp_path, tree, tmp_path / "run", extra=["--set", "data.resize=true"]))


def test_resize_matches_pil_bilinear(tmp_path, arrays):
    """A tree of 20×16 images with data.resize: the pixels are PIL's resize(BILINEAR) of them."""
    big = {}
    for split in ("train", "test"):
        n = TRAIN_N if split == "train" else TEST_N
        imgs = np.stack([np.asarray(Image.fromarray(x, mode="L").resize((20, 16), Image.BILINEAR))
                         for x in arrays[f"{split}_images"][:n]])
        big[f"{split}_images"], big[f"{split}_labels"] = imgs, arrays[f"{split}_labels"][:n]
    tree = tmp_path / "tree"
    for split in ("train", "test"):
        for c in CLASS_NAMES:
            (tree / split / c).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(big[f"{split}_images"], big[f"{split}_labels"])):
            Image.fromarray(img, mode="L").save(tree / split / CLASS_NAMES[label] / f"{i:05d}.png")
    h.assert_ok(train(tmp_path, tree, tmp_path / "run-folder", extra=["--set", "data.resize=true"]))
    idx = {}
    for split in ("train", "test"):
        back = np.stack([np.asarray(Image.fromarray(x, mode="L").resize((h.SIDE, h.SIDE),
                                                                         Image.BILINEAR))
                         for x in big[f"{split}_images"]])
        idx[f"{split}_images"], idx[f"{split}_labels"] = folder_order(back, big[f"{split}_labels"])
    idx_dir = h.write_dataset(tmp_path / "idx", idx)
    cfg = h.write_config(tmp_path / "idx.yaml", idx_dir, tmp_path / "run-idx", epochs=2)
    h.assert_ok(h.run_gputrain(["train", "--config", cfg]))
    h.assert_bitwise_equal(tmp_path / "run-folder" / "model.safetensors",
                           tmp_path / "run-idx" / "model.safetensors")


def test_corrupt_image_is_an_error_or_skipped_with_a_warning(tmp_path, arrays):
    tree = write_tree(tmp_path / "tree", arrays, kinds=("png", "jpg"))
    bad_png = tree / "train" / CLASS_NAMES[1] / "broken.png"
    good = next((tree / "train" / CLASS_NAMES[1]).glob("*.png")).read_bytes()
    bad_png.write_bytes(good[: len(good) // 2])
    res = train(tmp_path, tree, tmp_path / "run")
    h.assert_user_error(res, must_contain=[str(bad_png), "PNG"])
    h.assert_no_outputs(tmp_path / "run")

    bad_jpg = tree / "test" / CLASS_NAMES[2] / "broken.jpg"
    bad_jpg.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    res = train(tmp_path, tree, tmp_path / "run", extra=["--set", "data.skip_bad_images=true"])
    h.assert_ok(res)
    assert "skipped 2 unreadable images" in res.stderr, h.describe(res)
    assert "broken.png" in res.stderr


def test_empty_class_missing_split_and_class_count_errors(tmp_path, arrays):
    tree = write_tree(tmp_path / "tree", arrays)
    empty = tree / "test" / CLASS_NAMES[4]
    shutil.rmtree(empty)
    empty.mkdir()
    h.assert_user_error(train(tmp_path, tree, tmp_path / "run"),
                        must_contain=[str(empty), "empty class folder"])
    shutil.rmtree(tree / "test")
    h.assert_user_error(train(tmp_path, tree, tmp_path / "run"),
                        must_contain=[str(tree / "test"), "no such folder"])

    few = tmp_path / "few"
    for split in ("train", "test"):
        for c in CLASS_NAMES[:3]:
            (few / split / c).mkdir(parents=True)
            Image.fromarray(arrays["train_images"][0], mode="L").save(few / split / c / "a.png")
    h.assert_user_error(train(tmp_path, few, tmp_path / "run"),
                        must_contain=["3 class folders", "10 outputs"])

    nothing = tmp_path / "nothing"
    (nothing / "train").mkdir(parents=True)
    h.assert_user_error(train(tmp_path, nothing, tmp_path / "run"),
                        must_contain=[str(nothing / "train"), "no class folders"])
    h.assert_no_outputs(tmp_path / "run")


def tree_files(tree, split):
    """The image files of a split in the order gputrain reads them."""
    return [f for c in sorted(p.name for p in (tree / split).iterdir())
            for f in sorted((tree / split / c).iterdir())]


def test_predict_top1_equals_eval_argmax_and_names_round_trip(tmp_path, arrays):
    tree = write_tree(tmp_path / "tree", arrays, kinds=("png", "jpg"), rgb_every=2)
    out = tmp_path / "run"
    h.assert_ok(train(tmp_path, tree, out))
    weights = out / "model.safetensors"
    meta = h.read_safetensors(weights).metadata
    assert json.loads(meta["classes"]) == CLASS_NAMES

    dump = tmp_path / "logits.safetensors"
    res = h.run_gputrain(["eval", "--weights", weights, "--dump-logits", dump])
    h.assert_ok(res)
    for name in CLASS_NAMES:
        assert name in res.stdout
    logits = h.read_safetensors(dump).tensors["logits"]
    files = tree_files(tree, "test")
    assert len(files) == logits.shape[0] == TEST_N

    res = h.run_gputrain(["predict", "--weights", weights, "--json", "--top", "2"] + files)
    h.assert_ok(res)
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == TEST_N
    for i, (line, f) in enumerate(zip(lines, files)):
        assert line["image"] == str(f)
        assert len(line["top"]) == 2
        best = line["top"][0]
        assert best["index"] == int(np.argmax(logits[i])), (f, best, logits[i])
        assert best["class"] == CLASS_NAMES[best["index"]]
        z = logits[i].astype(np.float64)
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        assert abs(best["probability"] - p.max()) < 1e-5
        assert best["probability"] >= line["top"][1]["probability"]

    text = h.run_gputrain(["predict", "--weights", weights, files[0]])
    h.assert_ok(text)
    assert text.stdout.startswith(f"{files[0]}: {lines[0]['top'][0]['class']} ")


def test_predict_wrong_size_names_the_expected_size_or_resizes(tmp_path, arrays):
    tree = write_tree(tmp_path / "tree", arrays)
    out = tmp_path / "run"
    h.assert_ok(train(tmp_path, tree, out))
    big = tmp_path / "big.jpg"
    Image.fromarray(np.full((30, 40, 3), 128, np.uint8), mode="RGB").save(big)
    res = h.run_gputrain(["predict", "--weights", out / "model.safetensors", big])
    h.assert_user_error(res, must_contain=[str(big), "40x30", f"{h.SIDE}x{h.SIDE}"])
    res = h.run_gputrain(["predict", "--weights", out / "model.safetensors", "--set",
                          "data.resize=true", "--json", big])
    h.assert_ok(res)
    assert json.loads(res.stdout)["top"][0]["class"] in CLASS_NAMES
    missing = tmp_path / "absent.png"
    h.assert_user_error(h.run_gputrain(["predict", "--weights", out / "model.safetensors",
                                        missing]), must_contain=[str(missing)])
