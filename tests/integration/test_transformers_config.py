"""The config.json that mergemount writes, loaded by transformers' own code (issue 11: "load the result in
transformers without a config error").

Every text family of tests/fixtures/archs is frankenmerged (a top-level `slices:` making the model 4, and
3, layers longer), so is the text decoder of every multimodal family, Gemma 3 also through a `modules:`
recipe, and a few families go through a plain linear merge with `out_dtype: float16`. Each output
folder is built with `mergemount build` and loaded with transformers' `AutoConfig.from_pretrained`,
then checked against what the folder holds, in transformers' own view:

- the text layer count (`get_text_config().num_hidden_layers`) is the number of text layers in the
  weights, and the vision tower's (`vision_config.num_hidden_layers` or `.depth`) the source's;
- `layer_types`, where transformers' config has it, has one entry per layer and equals the file's where
  the file has one (transformers' own check, `layer_type_validation`, runs while loading), and every
  output layer gets the attention kind its source layer has in transformers' view of the source: where
  the file has no list, transformers derives one from the layer's index (Gemma 2: even layers sliding),
  which a slice shifted by an odd count breaks;
- `dtype` (top level, and every sub-config that sets one) is the dtype of the stored tensors;
- `validate()` passes where the config class has one (the strict dataclass configs of transformers
  >= 5.4 also check every field's type while loading), and the config serializes again;
- loading warns of nothing that loading the source model did not warn of already.

A family whose `model_type` this transformers does not know (internvl-lm's remote-code `locateanything`,
GPT-NeoX's `gpt_neox_reward_model`) is skipped by those tests with that reason; test_frankenmerge_known_part
checks the part of its config that transformers' classes build (KNOWN_PARTS). A case whose source model
transformers already rejects is skipped too (test_source_config fails for that source).

Optional, like the real huggingface_hub test in test_state_dir.py: it runs when MM_TRANSFORMERS_SRC
names the folder that holds the `transformers` package of a transformers checkout (its src/), and is
skipped otherwise. huggingface_hub must be importable too (installed, or MM_HF_HUB_SRC naming its src/
tree) at a version that transformers' dependency table accepts. No torch, tokenizers or safetensors is
needed: import_transformers says what it stands in for, and why config code does not use it.
Run with Debian 12's python3-filelock, -httpx, -tqdm, -packaging, -yaml, -numpy, -regex, -typer, -fsspec
against transformers 4.57.0.dev0 (main at 750dd2a4, hub v0.35.3), 5.3.0.dev0 (4f91111b, hub v1.3.7) and
5.5.0.dev0 (2da00a3c, hub v1.8.0; with hub >= 1.9, which refuses a bool for an int field, transformers'
own PhimoeConfig, whose tie_word_embeddings is annotated int, rejects the phimoe fixture). For example:
  git clone https://github.com/huggingface/transformers && mkdir /tmp/tf &&
  git -C transformers archive 4f91111b8ef37bd227f33c7facb92c41aa77604d src | tar -x -C /tmp/tf
  git clone https://github.com/huggingface/huggingface_hub && mkdir /tmp/hfhub &&
  git -C huggingface_hub archive v1.3.7 src | tar -x -C /tmp/hfhub
  MM_TRANSFORMERS_SRC=/tmp/tf/src MM_HF_HUB_SRC=/tmp/hfhub/src \\
      pytest tests/integration/test_transformers_config.py
"""

import contextlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import sys
import types

import pytest

import config_eval
import mmtest
import safetensors_io as st
import test_archs as archs

arch_model = archs.arch_model   # the session fixture that makes the tiny models

HOW = ("set MM_TRANSFORMERS_SRC to the src/ folder of a transformers checkout (and MM_HF_HUB_SRC to "
       "huggingface_hub's src/ unless it is installed) to run it; see this file's docstring")


# ---- transformers, imported from a source tree --------------------------------------------------------

def _dist_info(root, dist, version):
    """A metadata-only record (no module) of distribution `dist` under sys.path entry `root`."""
    d = os.path.join(root, f"{dist}-{version}.dist-info")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")


def _stub_package(name, attrs):
    """A module that only names `attrs`; using any of them raises."""
    def unusable(*a, **k):
        raise RuntimeError(f"{name} is a stub in test_transformers_config (not installed)")
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    m.__path__ = []
    for a in attrs:
        setattr(m, a, type(a, (), {"__init__": unusable}))
    sys.modules[name] = m
    return m


# What configuration_utils imports, through modeling_gguf_pytorch_utils -> integrations/ggml.py ->
# convert_slow_tokenizer.py, from the Rust tokenizers package: used to turn a GGUF file's tokenizer into a
# fast tokenizer (from_pretrained(gguf_file=...)), never by config.json loading.
TOKENIZERS_NAMES = {
    "tokenizers": ["AddedToken", "Encoding", "Regex", "Tokenizer"],
    "tokenizers.decoders": ["DecodeStream", "Decoder"],
    "tokenizers.models": ["BPE", "Unigram", "WordLevel", "WordPiece"],
    "tokenizers.normalizers": [],
    "tokenizers.pre_tokenizers": [],
    "tokenizers.processors": [],
    "tokenizers.trainers": ["BpeTrainer", "UnigramTrainer", "WordLevelTrainer", "WordPieceTrainer"],
}


def _min_version(src, dist):
    """The lowest version transformers' dependency table (read as text, nothing imported) allows for
    dist, e.g. "0.4.3" for "safetensors>=0.4.3"; "0" when it names no lower bound."""
    with open(os.path.join(src, "transformers", "dependency_versions_table.py")) as f:
        m = re.search(r'"%s":\s*"[^"]*?>=\s*([0-9][0-9.]*)' % re.escape(dist), f.read())
    return m.group(1) if m else "0"


def import_transformers(src, shim_dir):
    """transformers from the src/ folder `src`. Returns (transformers, what was stood in for).

    transformers' own code is used as it is. Stood in for, and only when not installed:
    - metadata (a dist-info record with no module) of huggingface_hub with the version its own
      __init__ names: transformers/dependency_versions_check.py asks importlib.metadata for it while
      importing, and a src/ tree has none;
    - metadata of safetensors (a Rust package), at the lowest version transformers' dependency table
      allows, for the same check. No safetensors module is made: is_safetensors_available() stays False,
      and config code opens no safetensors file;
    - the tokenizers package (Rust), as modules that only name its classes (using one raises), with
      metadata likewise. configuration_utils.py imports the GGUF loader (modeling_gguf_pytorch_utils ->
      integrations/ggml.py -> convert_slow_tokenizer.py, tokenization_utils_base.py), which imports those
      names at module level, for turning a GGUF file's tokenizer into a fast tokenizer; loading a
      config.json calls none of it. It is put in before `import transformers`: 4.x decides at import
      whether tokenizers exists and then needs its names in tokenization_utils_base's annotations.
    And when the installed regex is older than transformers' table asks (5.4 and later ask for
    regex >= 2025.10.22, a pin for its type stubs (transformers PR #44494); Debian 12 has 2022.10.31), a
    record of the asked version is put first on sys.path: the installed regex runs the patterns of
    utils/auto_docstring.py, the only regex user on the config path."""
    for p in (os.environ.get("MM_HF_HUB_SRC"), src):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    try:
        import huggingface_hub
    except ImportError as e:
        pytest.skip(f"huggingface_hub is not importable ({e}): " + HOW)
    stubbed = []
    os.makedirs(shim_dir, exist_ok=True)
    for dist, module, version in (("huggingface_hub", "huggingface_hub", huggingface_hub.__version__),
                                  ("safetensors", "safetensors", _min_version(src, "safetensors")),
                                  ("tokenizers", "tokenizers", _min_version(src, "tokenizers"))):
        try:
            importlib.metadata.version(dist)
            continue
        except importlib.metadata.PackageNotFoundError:
            pass
        if module != "huggingface_hub" and importlib.util.find_spec(module) is not None:
            continue
        _dist_info(shim_dir, dist, version)
        stubbed.append(f"metadata of {dist} {version}")
    from packaging.version import Version
    need, have = _min_version(src, "regex"), importlib.metadata.version("regex")
    if Version(have) < Version(need):
        _dist_info(shim_dir, "regex", need)
        stubbed.append(f"metadata of regex {need} over the installed {have}")
    if shim_dir not in sys.path:
        sys.path.insert(0, shim_dir)   # before the installed regex's own record
    importlib.invalidate_caches()
    if importlib.util.find_spec("tokenizers") is None:
        for name, attrs in TOKENIZERS_NAMES.items():
            _stub_package(name, attrs)
        for name in TOKENIZERS_NAMES:
            if "." in name:
                parent, child = name.rsplit(".", 1)
                setattr(sys.modules[parent], child, sys.modules[name])
        stubbed.append("module tokenizers (class names only)")
    try:
        import transformers
    except Exception as e:   # a missing dependency: say which
        pytest.skip(f"transformers from {src} cannot be imported ({type(e).__name__}: {e}); " + HOW)
    return transformers, stubbed


@pytest.fixture(scope="module")
def tf(tmp_path_factory):
    src = os.environ.get("MM_TRANSFORMERS_SRC")
    if not src:
        pytest.skip("transformers config check is optional: " + HOW)
    if not os.path.isfile(os.path.join(src, "transformers", "__init__.py")):
        pytest.fail(f"MM_TRANSFORMERS_SRC={src} holds no transformers/__init__.py", pytrace=False)
    transformers, stubbed = import_transformers(src, str(tmp_path_factory.mktemp("tf-shim")))
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    sys.stderr.write(f"\ntransformers {transformers.__version__} from {transformers.__file__}; "
                     f"stood in for: {', '.join(stubbed) or 'nothing'}\n")
    return types.SimpleNamespace(module=transformers, AutoConfig=AutoConfig, CONFIG_MAPPING=CONFIG_MAPPING,
                                 version=transformers.__version__)


class Warnings(logging.Handler):
    """The warnings and errors transformers logs while it is installed (warning_once's memory cleared)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def transformers_warnings():
    log = logging.getLogger("transformers")
    for fn in ("warning_once", "info_once"):
        f = getattr(logging.Logger, fn, None)
        if f is not None and hasattr(f, "cache_clear"):
            f.cache_clear()
    h = Warnings()
    log.addHandler(h)
    try:
        yield h.lines
    finally:
        log.removeHandler(h)


# Families whose model_type transformers does not know, and the part of their config.json that
# transformers' own classes build: {family: (key of the part or None for the whole file, model_type)}.
KNOWN_PARTS = {
    # OpenAssistant's GPTNeoXRewardModelConfig (model_type gpt_neox_reward_model) is a GPTNeoXConfig
    "gpt-neox": (None, "gpt_neox"),
    # LocateAnythingConfig (remote code) builds its text_config with transformers' Qwen2Config(**text_config)
    "internvl-lm": ("text_config", "qwen2"),
}


def make_config(tf, folder, part=None):
    """transformers' config of folder/config.json: AutoConfig.from_pretrained, or for part = (key,
    model_type) that model_type's class built from the file's `key` object (the whole file for None)."""
    if part is None:
        return tf.AutoConfig.from_pretrained(folder)
    key, model_type = part
    d = read_json(folder)
    return tf.CONFIG_MAPPING[model_type](**(d[key] if key else d))


def load(tf, folder, part=None):
    """(config, its warnings) as transformers loads folder/config.json (see make_config); validate()
    and a serialization run too. Raises what transformers raises."""
    with transformers_warnings() as warned:
        config = make_config(tf, folder, part)
        if callable(getattr(config, "validate", None)):
            config.validate()
        json.loads(config.to_json_string())
    return config, [w for w in warned if not w.startswith("PyTorch was not found")]


# ---- the checks ---------------------------------------------------------------------------------------

def read_json(folder, name="config.json"):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def stored_dtypes(folder):
    """The dtypes of the folder's tensors, as transformers names them ({"bfloat16"})."""
    out = set()
    for fname in st.weight_files(folder):
        header, _ = st.read_header(os.path.join(folder, fname))
        out |= {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    return {st.TORCH_NAME.get(d, d) for d in out}


def text_layers_in_weights(folder, family):
    """The number of text-decoder layers in the folder's tensor names."""
    table = archs.table(family)
    text = table["text_decoder"]
    idx = set()
    for fname in st.weight_files(folder):
        header, _ = st.read_header(os.path.join(folder, fname))
        for name in header:
            if name != "__metadata__" and config_eval.module_of(table, name) == "text_decoder":
                sp = text.split(name)
                if sp:
                    idx.add(sp[1])
    assert idx == set(range(len(idx))), f"text layer indexes have gaps: {sorted(idx)}"
    return len(idx)


def dtype_name(v):
    """A config dtype (a string without torch, a torch.dtype with it) as a plain name."""
    return None if v is None else str(v).replace("torch.", "")


def sub_configs(config):
    """(name, sub-config) of every PreTrainedConfig the config holds (text_config, vision_config, ...)."""
    out = []
    for k, v in vars(config).items():
        if hasattr(v, "to_dict") and hasattr(v, "model_type"):
            out.append((k, v))
    return out


def skip_unknown(tf, folder):
    """Skips the case when transformers does not know the folder's model_type (remote code)."""
    cfg = read_json(folder)
    mt = cfg.get("model_type")
    if mt not in tf.CONFIG_MAPPING:
        remote = " (remote code: auto_map " + json.dumps(cfg["auto_map"].get("AutoConfig")) + ")" \
            if "auto_map" in cfg else ""
        pytest.skip(f"transformers {tf.version} does not know model_type {mt!r}{remote}")


def source_accepted(tf, folder, part=None):
    """The source model's (config, warnings); skips the case when transformers rejects the source
    itself (test_source_config reports that)."""
    if part is None:
        skip_unknown(tf, folder)
    try:
        return load(tf, folder, part)
    except Exception as e:
        pytest.skip(f"transformers rejects the source model's config already: {type(e).__name__}: {e}")


def check_output(tf, family, src, out, origins, vision_layers=None, part=None):
    """Loads `out` with transformers and checks its view of it (see the module docstring). origins: per
    output text layer, the (model folder, layer) it comes from; part: see make_config."""
    _, src_warned = source_accepted(tf, src, part)
    on_disk = read_json(out)
    try:
        config, warned = load(tf, out, part)
    except Exception as e:
        what = f" (as {part[1]}: {part[0] or 'the whole file'})" if part else ""
        pytest.fail(f"transformers {tf.version} rejects the config.json mergemount wrote for {family}{what}: "
                    f"{type(e).__name__}: {e}", pytrace=False)
    problems = []
    new = sorted(set(warned) - set(src_warned))
    if new:
        problems.append("warnings the source did not give: " + " | ".join(w[:300] for w in new))
    if part is None:
        assert type(config).model_type == on_disk["model_type"], (type(config).__name__, on_disk["model_type"])

    text = config.get_text_config()
    weights = text_layers_in_weights(out, family)
    if weights != len(origins):
        problems.append(f"the weights have {weights} text layers, the test expected {len(origins)}")
    if text.num_hidden_layers != weights:
        problems.append(f"{type(text).__name__}.num_hidden_layers = {text.num_hidden_layers}, "
                        f"the weights have {weights} text layers")
    lt = getattr(text, "layer_types", None)
    if lt is not None:
        if len(lt) != text.num_hidden_layers:
            problems.append(f"len(layer_types) = {len(lt)}, num_hidden_layers = {text.num_hidden_layers}")
        holder = on_disk[part[0]] if part and part[0] else on_disk
        if part is None:
            holder, _ = archs.table(family)["text_decoder"].count_holder(on_disk)
        file_lt = (holder or {}).get("layer_types")
        if file_lt is not None and list(file_lt) != list(lt):
            problems.append("transformers' layer_types differ from the file's")
        # each output layer runs with the attention its source layer ran with, in transformers' view
        # (where the file has no layer_types, transformers derives them from the layer's index)
        sources = {}
        wrong = []
        for i, (folder, j) in enumerate(origins):
            if folder not in sources:
                text_of = load(tf, folder, part)[0].get_text_config()
                sources[folder] = list(getattr(text_of, "layer_types", None) or [])
            want = sources[folder][j] if j < len(sources[folder]) else None
            if i < len(lt) and want is not None and lt[i] != want:
                wrong.append(f"{i} ({lt[i]}; from layer {j}: {want})")
        if wrong:
            where = "the file's" if file_lt is not None else "derived by transformers (the file has none)"
            problems.append(f"layer_types ({where}) give {len(wrong)} of {len(lt)} output layers another "
                            f"attention than the layer they copy: " + ", ".join(wrong[:8])
                            + (" ..." if len(wrong) > 8 else ""))

    if vision_layers is not None:
        vision = getattr(config, "vision_config", None)
        got = None
        for key in ("num_hidden_layers", "depth"):
            if isinstance(getattr(vision, key, None), int):
                got = getattr(vision, key)
                break
        if got != vision_layers:
            problems.append(f"vision layers: transformers reads {got}, the model has {vision_layers}")

    stored = stored_dtypes(out)
    if len(stored) == 1:
        want = next(iter(stored))
        if dtype_name(config.dtype) != want:
            problems.append(f"config.dtype = {dtype_name(config.dtype)}, the tensors are {want}")
        for name, sub in sub_configs(config):
            if sub.dtype is not None and dtype_name(sub.dtype) != want:
                problems.append(f"{name}.dtype = {dtype_name(sub.dtype)}, the tensors are {want}")
    assert not problems, (f"transformers {tf.version} on {family}:\n  " + "\n  ".join(problems))
    return config


def build(tmp_path, cfg, name="out"):
    out = tmp_path / name
    return mmtest.build(mmtest.write_config(tmp_path, cfg), out)


def counts(folder, family):
    return archs.counts(folder, family)


# ---- the cases -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", archs.FAMILIES)
def test_source_config(tf, arch_model, family):
    """The fixture itself (a tiny copy of a published config.json): transformers must take it, or the
    merge cases of the family say nothing about mergemount."""
    src = arch_model(family, 1)
    part = None
    if read_json(src).get("model_type") not in tf.CONFIG_MAPPING and family in KNOWN_PARTS:
        part = KNOWN_PARTS[family]
    else:
        skip_unknown(tf, src)
    try:
        load(tf, src, part)
    except Exception as e:
        what = f" (as {part[1]}: {part[0] or 'the whole file'})" if part else ""
        pytest.fail(f"transformers {tf.version} rejects the fixture's own config.json ({family}{what}): "
                    f"{type(e).__name__}: {e}", pytrace=False)


def frankenmerge(a, b, n, overlap):
    """(a top-level `slices:` config, the origin of each output text layer): a's layers [0, n//3), then
    b's [n//3 - overlap, n): n + overlap layers."""
    first, second = [0, n // 3], [n // 3 - overlap, n]
    cfg = {"merge_method": "passthrough",
           "slices": [{"sources": [{"model": a, "layer_range": first}]},
                      {"sources": [{"model": b, "layer_range": second}]}]}
    return cfg, [(a, j) for j in range(*first)] + [(b, j) for j in range(*second)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("overlap", [4, 3])
@pytest.mark.parametrize("family", archs.FAMILIES)
def test_frankenmerge(tf, tmp_path, arch_model, family, overlap):
    """A top-level `slices:` of two fine-tunes, n + overlap text layers (for a multimodal family: its text
    decoder; the vision tower is the first model's). An odd overlap shifts the second slice's layers by
    an odd count: a per-layer pattern that transformers derives from the index (Gemma 2's alternation)
    then no longer matches the layers' own."""
    a, b = arch_model(family, 1), arch_model(family, 2)
    skip_unknown(tf, a)
    before = counts(a, family)
    cfg, origins = frankenmerge(a, b, before["text_decoder"], overlap)
    out = build(tmp_path, cfg)
    check_output(tf, family, a, out, origins, before.get("vision_tower"))


@pytest.mark.parametrize("overlap", [4, 3])
@pytest.mark.parametrize("family", sorted(KNOWN_PARTS))
def test_frankenmerge_known_part(tf, tmp_path, arch_model, family, overlap):
    """The families transformers has no class for (test_frankenmerge skips them): the part of their
    config that transformers' own classes build, built the way their code does (KNOWN_PARTS)."""
    a, b = arch_model(family, 1), arch_model(family, 2)
    part = KNOWN_PARTS[family]
    cfg, origins = frankenmerge(a, b, counts(a, family)["text_decoder"], overlap)
    out = build(tmp_path, cfg)
    check_output(tf, family, a, out, origins, part=part)


def test_modules_gemma3(tf, tmp_path, arch_model):
    """Gemma 3 through `modules:`: the text decoder a frankenmerge (66 layers of 62), the vision tower a
    linear merge (27 layers), the projector copied."""
    a, b = arch_model("gemma3-vl", 1), arch_model("gemma3-vl", 2)
    skip_unknown(tf, a)
    before = counts(a, "gemma3-vl")
    n = before["text_decoder"]
    out = build(tmp_path, archs.modules_config(a, b, n))
    _, origins = frankenmerge(a, b, n, 4)   # modules_config's text decoder recipe
    check_output(tf, "gemma3-vl", a, out, origins, before["vision_tower"])


LINEAR_F16 = ["llama3", "qwen2.5", "gemma2", "phi3", "gemma3-vl", "qwen2-vl", "qwen3-vl", "llava"]


@pytest.mark.parametrize("family", LINEAR_F16)
def test_linear_out_dtype_float16(tf, tmp_path, arch_model, family):
    """A plain linear merge of two bfloat16 fine-tunes written as float16: every dtype transformers
    reads is float16, the layer counts are the sources'."""
    a, b = arch_model(family, 1), arch_model(family, 2)
    skip_unknown(tf, a)
    before = counts(a, family)
    cfg = mmtest.method_config("linear", [(a, {"weight": 0.6}), (b, {"weight": 0.4})], out_dtype="float16")
    out = build(tmp_path, cfg)
    assert stored_dtypes(out) == {"float16"}
    config = check_output(tf, family, a, out, [(a, j) for j in range(before["text_decoder"])],
                          before.get("vision_tower"))
    assert dtype_name(config.dtype) == "float16"
