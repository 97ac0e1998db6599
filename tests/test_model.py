import numpy as np
import pytest
import torch

from saemi.errors import SaemiError
from saemi.model import choose_device, load_segmenter, predict_tiled


def test_missing_weights_give_a_clear_error(tmp_path):
    with pytest.raises(SaemiError, match="model weights not found"):
        load_segmenter(tmp_path / "nothing.pt", device="cpu")


def test_corrupt_weights_give_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(SaemiError, match="could not load model weights"):
        load_segmenter(bad, device="cpu")


class _WritesMarker:
    """Pickles to a call of ``Path.write_text(marker, "pwned")``: unpickling it runs that call."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.write_text, (Path(self.marker), "pwned"))


def test_weights_are_never_unpickled(tmp_path, random_segmenter):
    # A weights file whose pickle would run code when unpickled: a real state dict (so a loader that
    # unpickled it would otherwise succeed) plus one entry whose unpickling writes a marker file.
    # Loading must refuse the file before any of it runs; weights_only=False would write the marker.
    marker = tmp_path / "marker"
    state = {k: v.half() for k, v in random_segmenter.net.state_dict().items()}
    path = tmp_path / "evil.pt"
    torch.save({**state, "payload": _WritesMarker(marker)}, path)
    assert not marker.exists()
    with pytest.raises(SaemiError, match="could not load model weights") as err:
        load_segmenter(path, device="cpu")
    assert not marker.exists(), "the weights file was unpickled: its payload ran"
    assert err.value.code == "no_model"


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SaemiError):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SaemiError, match="no CUDA"):
            choose_device("cuda")


def test_tiling_blends_to_the_same_answer_as_one_pass():
    # a position-independent per-pixel "network": tiles must reproduce it exactly
    def forward(batch):
        s = 1 / (1 + np.exp(-batch.sum(axis=1, keepdims=True)))
        return np.concatenate([1 - s, s], axis=1)

    x = np.random.default_rng(0).normal(size=(3, 300, 700)).astype(np.float32)
    whole = forward(x[None])[0]
    tiled = predict_tiled(forward, x, 2, tile=128, overlap=32)
    assert tiled.shape == (2, 300, 700)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_random_network_predicts_probabilities_at_image_resolution(random_segmenter):
    img = np.random.default_rng(0).integers(0, 255, (150, 1300, 3)).astype(np.uint8)  # forces tiling
    prob = random_segmenter.predict(img)
    assert prob.shape == (3, 150, 1300) and prob.dtype == np.float32
    np.testing.assert_allclose(prob.sum(axis=0), 1, atol=1e-4)


def test_state_dict_round_trip(tmp_path, random_segmenter):
    from saemi.card import WEIGHTS_FILE

    torch.save({k: v.half() for k, v in random_segmenter.net.state_dict().items()}, tmp_path / WEIGHTS_FILE)
    seg = load_segmenter(tmp_path, device="cpu")
    img = np.random.default_rng(1).integers(0, 255, (64, 96, 3)).astype(np.uint8)
    assert seg.predict(img).shape == (3, 64, 96)


@pytest.mark.slow
def test_shipped_weights_segment_real_images(trained_segmenter, emps_dir):
    from saemi.metrics import dice
    from saemi.pipeline import analyze
    from saemi.dataset import read_label_image

    scores = []
    for name in ["2ee0518d7a", "70f9f13af4", "5c1cd79e2e"]:
        a = analyze(emps_dir / "images" / f"{name}.png", segmenter=trained_segmenter)
        truth = read_label_image(emps_dir / "segmaps" / f"{name}.png")
        scores.append(dice(truth > 0, a.labels > 0))
    assert np.mean(scores) >= 0.8, scores


def test_training_class_weights_are_divided_back_out():
    # A constant "network": every pixel gets the same logits. The weighted-loss
    # prior (boundary x2) must come off: p_returned ∝ softmax(logits) / weights.
    from saemi.model import make_segmenter

    class Constant(torch.nn.Module):
        def forward(self, x):
            logits = torch.tensor([0.0, 0.5, 1.0]).reshape(1, 3, 1, 1)
            return logits.expand(x.shape[0], 3, x.shape[2], x.shape[3])

    img = np.full((40, 40, 3), 128, np.uint8)
    raw = torch.softmax(torch.tensor([0.0, 0.5, 1.0]), 0).numpy()
    plain = make_segmenter(Constant(), {"loss_class_weights": [1, 1, 1]}, device="cpu").predict(img)
    np.testing.assert_allclose(plain[:, 20, 20], raw, atol=1e-5)
    corrected = make_segmenter(Constant(), {"loss_class_weights": [1, 1, 2]}, device="cpu").predict(img)
    expected = raw / [1, 1, 2]
    np.testing.assert_allclose(corrected[:, 20, 20], expected / expected.sum(), atol=1e-5)
    # a card for another number of classes leaves the probabilities alone
    other = make_segmenter(Constant(), {"loss_class_weights": [1, 2]}, device="cpu").predict(img)
    np.testing.assert_allclose(other[:, 20, 20], raw, atol=1e-5)


@pytest.mark.parametrize("weights", [[1, 0, 2], [1, "x", 2], 2.0, [1, float("inf"), 2]])
def test_bad_class_weights_in_the_card_are_named(weights, random_segmenter):
    from saemi.model import make_segmenter

    with pytest.raises(SaemiError, match="loss_class_weights"):
        make_segmenter(random_segmenter.net, {"loss_class_weights": weights}, device="cpu")
