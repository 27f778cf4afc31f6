"""Every error mergekit's methods raise is refused before anything is mounted or written: a
non-zero exit, a message naming the config file and place and saying what is wrong, nothing mounted
(mount) and no output folder (build). A method that is not implemented yet skips its cases."""

import re

import pytest

import mmtest
from test_errors import MODES, assert_position, run_bad

cfg_of = mmtest.method_config


def refuse(tmp_path, mode, cfg, *words):
    """The config must be refused in `mode`; the message must name the config and contain each of
    `words` (regular expressions, case-insensitive). Returns the message."""
    config = mmtest.write_config(tmp_path, cfg)
    mmtest.skip_unless_implemented(config, cfg["merge_method"])
    text = run_bad(mode, config, tmp_path)
    assert "not implemented" not in text, text
    assert_position(text, config)
    for w in words:
        assert re.search(w, text, re.IGNORECASE), f"the message does not say /{w}/:\n{text}"
    return text


@pytest.fixture
def abc(models):
    return models[(1, "bf16")], models[(2, "bf16")], models[(3, "bf16")]


# ---- della: epsilon bounds (B2.9, B9.3 case 10) --------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["della", "della_linear"])
@pytest.mark.parametrize("density,epsilon", [(0.5, 0.6), (0.7, 0.35), (0.7, 1.35), (0.2, 0.2)])
def test_della_epsilon_out_of_bounds(tmp_path, abc, mode, method, density, epsilon):
    a, b, c = abc
    cfg = cfg_of(method, [(a, {"weight": 1.0, "density": density, "epsilon": epsilon})], base=c)
    refuse(tmp_path, mode, cfg, "epsilon")


def test_della_epsilon_from_a_gradient(tmp_path, abc):
    # only layer 1 (t = 1) gets epsilon 0.6: still refused at mount time
    a, b, c = abc
    cfg = cfg_of("della", [(a, {"weight": 1.0, "density": 0.5, "epsilon": [0.1, 0.6]})], base=c)
    text = refuse(tmp_path, "mount", cfg, "epsilon")
    assert "layers.1" in text, text


# ---- model_stock (B2.7) ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_model_stock_without_base(tmp_path, abc, mode):
    a, b, c = abc
    refuse(tmp_path, mode, cfg_of("model_stock", [(a, None), (b, None), (c, None)]), "base")


@pytest.mark.parametrize("mode", MODES)
def test_model_stock_one_other_model(tmp_path, abc, mode):
    a, b, c = abc
    refuse(tmp_path, mode, cfg_of("model_stock", [(a, None)], base=c), "two|2")


# ---- slerp, nuslerp (B2.3, B2.4) -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["three_models", "no_base", "base_not_listed_plus_two"])
def test_slerp_needs_two_models_one_the_base(tmp_path, abc, mode, case):
    a, b, c = abc
    cfg = {"three_models": cfg_of("slerp", [(a, None), (b, None), (c, None)], base=a),
           "no_base": cfg_of("slerp", [(a, None), (b, None)]),
           "base_not_listed_plus_two": cfg_of("slerp", [(a, None), (b, None)], base=c)}[case]
    cfg["parameters"] = {"t": 0.5}
    refuse(tmp_path, mode, cfg, "slerp", "base|two|2")


@pytest.mark.parametrize("mode", MODES)
def test_slerp_without_t(tmp_path, abc, mode):
    a, b, _ = abc
    refuse(tmp_path, mode, cfg_of("slerp", [(b, None)], base=a), r"\bt\b")


@pytest.mark.parametrize("mode", MODES)
def test_nuslerp_base_among_its_two_models(tmp_path, abc, mode):
    a, b, _ = abc
    cfg = cfg_of("nuslerp", [(a, {"weight": 0.5}), (b, {"weight": 0.5})], base=a)
    refuse(tmp_path, mode, cfg, "base")


@pytest.mark.parametrize("mode", MODES)
def test_nuslerp_three_models(tmp_path, abc, mode):
    a, b, c = abc
    cfg = cfg_of("nuslerp", [(a, {"weight": 0.5}), (b, {"weight": 0.5}), (c, {"weight": 0.5})])
    refuse(tmp_path, mode, cfg, "two|2")


# ---- ties: density 0 (B2.9: k = 0 is mergekit's AssertionError) ------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("density", [0, 0.0, [0, 0.5], 0.02])
def test_ties_keeps_nothing(tmp_path, abc, mode, density):
    """density 0; a gradient that is 0 at layer 0 and the embeddings (t = 0); 0.02 of a 32-element norm
    (floor(0.64) = 0)."""
    a, b, c = abc
    cfg = cfg_of("ties", [(a, {"weight": 1.0, "density": density}), (b, {"weight": 1.0, "density": 0.5})], base=c)
    refuse(tmp_path, mode, cfg, "density")


# ---- shape mismatch in methods without rectification (B2 common rules) --------------------------------

@pytest.fixture
def wide_vocab(make_model):
    return make_model(2, "bf16", vocab=72)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["sce", "ram", "ramplus_tl", "nearswap", "multislerp"])
def test_shape_mismatch_without_rectification(tmp_path, abc, wide_vocab, mode, method):
    a, b, c = abc
    p = {"weight": 0.5} if method == "multislerp" else None
    entries = [(wide_vocab, p)] if method == "nearswap" else [(a, p), (wide_vocab, p)]
    cfg = cfg_of(method, entries, base=c, parameters={"t": 0.01} if method == "nearswap" else None)
    refuse(tmp_path, mode, cfg, "shape", "embed_tokens|lm_head")


# ---- base + exactly one other model (B2.12, B2.13) ---------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["nearswap", "arcee_fusion"])
def test_base_and_exactly_one_other(tmp_path, abc, mode, method):
    a, b, c = abc
    cfg = cfg_of(method, [(a, None), (b, None)], base=c, parameters={"t": 0.01} if method == "nearswap" else None)
    refuse(tmp_path, mode, cfg, "one|1")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["nearswap", "arcee_fusion", "sce", "ram", "ramplus_tl", "ties"])
def test_base_required(tmp_path, abc, mode, method):
    a, b, _ = abc
    p = {"weight": 1.0, "density": 0.5} if method == "ties" else None
    cfg = cfg_of(method, [(a, p), (b, p)], parameters={"t": 0.01} if method == "nearswap" else None)
    refuse(tmp_path, mode, cfg, "base")
