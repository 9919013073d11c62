"""gputrain preview: the first images of an epoch's order as the model sees them (augmented,
before normalization), checked against the original images; train_batch.png in a run folder."""

import numpy as np

import cli_helpers as h


def preview(cfg, tmp_path, *extra):
    out, tensors = tmp_path / "grid.png", tmp_path / "batch.safetensors"
    res = h.run_gputrain(["preview", "--config", cfg, "--out", out, "--tensors", tensors,
                          *extra], cwd=tmp_path)
    h.assert_ok(res)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    st = h.read_safetensors(tensors)
    return st.tensors["images"], st.tensors["labels"]


def shifted(image, dy, dx):
    """image[y + dy, x + dx], zero outside (the crop of a zero-padded image)."""
    out = np.zeros_like(image)
    h_, w_ = image.shape
    for y in range(h_):
        for x in range(w_):
            sy, sx = y + dy, x + dx
            if 0 <= sy < h_ and 0 <= sx < w_:
                out[y, x] = image[sy, sx]
    return out


def test_forced_flip_mirrors_each_image_exactly(make_config, dataset, tmp_path):
    cfg = make_config()
    plain, plain_labels = preview(cfg, tmp_path, "--count", "20", "--epoch", "2")
    flipped, labels = preview(cfg, tmp_path, "--count", "20", "--epoch", "2", "--set",
                              "data.augment.crop_padding=0", "--set", "data.augment.hflip=true",
                              "--set", "data.augment.hflip_probability=1")
    assert flipped.dtype == np.uint8 and flipped.shape == (20, 1, 12, 12)
    assert labels.dtype == np.int32 and labels.shape == (20,)
    np.testing.assert_array_equal(labels, plain_labels)
    # The plain preview holds real training images (the order's, unchanged).
    train = dataset.arrays["train_images"].reshape(-1, 1, 12, 12)
    for img in plain:
        assert any(np.array_equal(img, t) for t in train), "a preview image is not a training image"
    np.testing.assert_array_equal(flipped, plain[:, :, :, ::-1])


def test_padding_shifts_each_image_with_zeros(make_config, tmp_path):
    cfg = make_config()
    P = 3
    plain, _ = preview(cfg, tmp_path, "--count", "30")
    cropped, _ = preview(cfg, tmp_path, "--count", "30", "--set",
                         f"data.augment.crop_padding={P}")
    offsets = set()
    for i, (a, b) in enumerate(zip(plain, cropped)):
        found = [(dy, dx) for dy in range(-P, P + 1) for dx in range(-P, P + 1)
                 if np.array_equal(shifted(a[0], dy, dx), b[0])]
        assert found, f"image {i} is no shift of its original within [-{P}, {P}]²"
        offsets.add(found[0])
    assert len(offsets) > 3, f"30 images drew only the offsets {offsets}"
    # Another epoch draws other crops.
    other, _ = preview(cfg, tmp_path, "--count", "30", "--epoch", "3", "--set",
                       f"data.augment.crop_padding={P}", "--set", "train.shuffle=false")
    same_order, _ = preview(cfg, tmp_path, "--count", "30", "--epoch", "2", "--set",
                            f"data.augment.crop_padding={P}", "--set", "train.shuffle=false")
    assert not np.array_equal(other, same_order)


def test_train_writes_train_batch_png(make_config, tmp_path):
    cfg = make_config(epochs=1)
    res = h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / "run", "--quiet", "--set",
                          "data.augment.hflip=true"], cwd=tmp_path)
    h.assert_ok(res)
    assert (tmp_path / "run/train_batch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_preview_rejects_a_missing_folder_and_bad_augment_keys(make_config, tmp_path):
    cfg = make_config()
    res = h.run_gputrain(["preview", "--config", cfg, "--out", tmp_path / "no/such/grid.png"],
                         cwd=tmp_path)
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = h.run_gputrain(["preview", "--config", cfg, "--out", tmp_path / "g.png", "--set",
                          "data.augment.crop=2"], cwd=tmp_path)
    assert res.returncode == 2 and "unknown key 'data.augment.crop'" in res.stderr
    assert not (tmp_path / "g.png").exists()
