"""Reading the mount every way loaders do: random ranges, ranges around header/tensor/block
boundaries, past EOF, mmap (shared and private, pages touched in random order), numpy.memmap, many
threads, `cp -r`. The mount must give the bytes `mergemount build` writes, which must equal the
reference."""

import filecmp
import mmap
import os
import random
import struct
import subprocess

import numpy as np
import pytest

import config_eval
import mmtest
import safetensors_io as st

# Tensors bigger than one ~1 MiB compute block, so reads cross block boundaries inside tensors.
BIG = dict(layers=2, hidden=512, intermediate=1536, vocab=1024, heads=8, kv_heads=2)


@pytest.fixture(scope="module")
def big_models(make_model):
    return [make_model(seed, "bf16", shards=2 if seed == 2 else 1, **BIG) for seed in (1, 2, 3)]


@pytest.fixture(scope="module")
def merge_case(big_models, tmp_path_factory):
    """A 3-model linear merge in 3+ output shards, the reference tensors, and the built folder."""
    tmp = tmp_path_factory.mktemp("reads")
    a, b, c = big_models
    cfg = {"merge_method": "linear",
           "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.3}},
                      {"model": c, "parameters": {"weight": [0.1, 0.6]}}],
           "dtype": "float32", "out_dtype": "bfloat16"}
    config = mmtest.write_config(tmp, cfg)
    args = ["--out-shard-size", "6M"]
    built = mmtest.build(config, tmp / "built", *args)
    expected = config_eval.evaluate(cfg)
    mmtest.assert_matches_reference(built, expected.tensors)
    files = {f: mmtest.read_file(os.path.join(built, f)) for f in mmtest.files_of(built)}
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) >= 3, shards
    return {"config": config, "args": args, "built": built, "files": files, "shards": shards}


def boundaries(data):
    """Interesting offsets of a shard: header/data boundary, tensor starts and ends, power-of-two
    block and request boundaries inside tensors and in the file, the last byte."""
    header, start = st.read_header(data)
    header.pop("__metadata__", None)
    points = {0, 8, start, len(data) - 1, len(data)}
    for info in header.values():
        b, e = info["data_offsets"]
        points |= {start + b, start + e}
        for step in (1 << 16, 1 << 18, 1 << 19, 1 << 20):
            points |= set(range(start + b + step, start + e, step))
    for step in (1 << 17, 1 << 20):
        points |= set(range(step, len(data), step))
    return sorted(points)


def pread(path, off, length):
    fd = os.open(path, os.O_RDONLY)
    try:
        out = b""
        while len(out) < length:
            chunk = os.pread(fd, length - len(out), off + len(out))
            if not chunk:
                break
            out += chunk
        return out
    finally:
        os.close(fd)


def test_whole_files_and_sizes(mount, merge_case):
    with mount(merge_case["config"], *merge_case["args"]) as m:
        assert mmtest.files_of(m.path) == sorted(merge_case["files"])
        for name, data in merge_case["files"].items():
            p = os.path.join(m.path, name)
            assert os.stat(p).st_size == len(data), name
            assert mmtest.read_file(p) == data, name


def test_random_ranges(mount, merge_case):
    rnd = random.Random(1234)
    with mount(merge_case["config"], *merge_case["args"]) as m:
        for name, data in merge_case["files"].items():
            p = os.path.join(m.path, name)
            size = len(data)
            fd = os.open(p, os.O_RDONLY)
            try:
                for _ in range(150 if name.endswith(".safetensors") else 20):
                    off = rnd.randrange(0, size + 64)
                    length = rnd.choice([1, 2, 3, 7, 100, 4096, 65536, 200000, 1 << 20, 3 << 20])
                    got = os.pread(fd, length, off)
                    # a FUSE read of a regular file returns everything up to EOF in one call
                    assert got == data[off:off + length], (name, off, length)
            finally:
                os.close(fd)


def test_boundary_ranges_and_eof(mount, merge_case):
    with mount(merge_case["config"], *merge_case["args"]) as m:
        for name in merge_case["shards"]:
            data = merge_case["files"][name]
            p = os.path.join(m.path, name)
            for point in boundaries(data):
                for delta in (-3, -1, 0, 1):
                    off = point + delta
                    if off < 0:
                        continue
                    for length in (1, 2, 5, 64, 4097):
                        assert pread(p, off, length) == data[off:off + length], (name, off, length)
            size = len(data)
            assert pread(p, size - 1, 1) == data[-1:]
            assert pread(p, size - 1, 100) == data[-1:]
            assert pread(p, size, 10) == b""
            assert pread(p, size + 12345, 10) == b""


def test_header_then_tensor_like_a_loader(mount, merge_case):
    """What safetensors loaders do: read 8 bytes, then the header, then each tensor's range."""
    with mount(merge_case["config"], *merge_case["args"]) as m:
        for name in merge_case["shards"]:
            data = merge_case["files"][name]
            p = os.path.join(m.path, name)
            with open(p, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                head = f.read(n)
                assert head == data[8:8 + n]
                header, start = st.read_header(data)
                header.pop("__metadata__", None)
                for tname, info in sorted(header.items(), key=lambda kv: -kv[1]["data_offsets"][0]):
                    b, e = info["data_offsets"]
                    f.seek(start + b)
                    assert f.read(e - b) == data[start + b:start + e], tname


@pytest.mark.parametrize("flags", [mmap.MAP_SHARED, mmap.MAP_PRIVATE], ids=["shared", "private"])
def test_mmap_random_page_order(mount, merge_case, flags):
    rnd = random.Random(99)
    with mount(merge_case["config"], *merge_case["args"]) as m:
        for name in merge_case["shards"]:
            data = merge_case["files"][name]
            p = os.path.join(m.path, name)
            with open(p, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
                try:
                    assert len(mm) == len(data)
                    pages = list(range(0, len(data), mmap.PAGESIZE))
                    rnd.shuffle(pages)
                    for off in pages:
                        end = min(off + mmap.PAGESIZE, len(data))
                        assert mm[off:end] == data[off:end], (name, off)
                        # ls -l of the folder while mapped: the sizes never change (docs/design.md, FUSE rules)
                        if off == pages[len(pages) // 2]:
                            for other, odata in merge_case["files"].items():
                                assert os.stat(os.path.join(m.path, other)).st_size == len(odata)
                    assert mm[:] == data
                finally:
                    mm.close()


def test_numpy_memmap(mount, merge_case):
    with mount(merge_case["config"], *merge_case["args"]) as m:
        for name in merge_case["shards"]:
            data = merge_case["files"][name]
            header, start = st.read_header(data)
            header.pop("__metadata__", None)
            p = os.path.join(m.path, name)
            mm = np.memmap(p, dtype=np.uint8, mode="r")
            try:
                assert mm.shape[0] == len(data)
                for tname, info in header.items():
                    b, e = info["data_offsets"]
                    assert info["dtype"] == "BF16"
                    view = np.memmap(p, dtype="<u2", mode="r", offset=start + b, shape=tuple(info["shape"]))
                    want = np.frombuffer(data[start + b:start + e], dtype="<u2").reshape(info["shape"])
                    assert np.array_equal(view, want), tname
                    del view
                assert bytes(mm[-4096:]) == data[-4096:]
            finally:
                del mm


def test_many_threads(mount, merge_case):
    files = merge_case["files"]
    names = sorted(files)

    with mount(merge_case["config"], *merge_case["args"]) as m:
        def reader(seed):
            rnd = random.Random(seed)
            errors = []
            for _ in range(60):
                name = rnd.choice(names)
                data = files[name]
                off = rnd.randrange(0, len(data) + 1)
                length = rnd.choice([1, 4096, 100000, 1 << 20])
                got = pread(os.path.join(m.path, name), off, length)
                if got != data[off:off + length]:
                    errors.append((name, off, length))
            # and one whole sequential pass
            name = names[seed % len(names)]
            if mmtest.read_file(os.path.join(m.path, name)) != files[name]:
                errors.append((name, "whole"))
            return errors

        errors = mmtest.in_threads(16, reader)
    assert not errors, errors[:10]


def test_cp_r_equals_build(mount, merge_case, tmp_path):
    dest = tmp_path / "copy"
    with mount(merge_case["config"], *merge_case["args"]) as m:
        subprocess.run(["cp", "-r", m.path, str(dest)], check=True)
    built = merge_case["built"]
    assert mmtest.files_of(str(dest)) == mmtest.files_of(built)
    match, mismatch, errors = filecmp.cmpfiles(str(dest), built, mmtest.files_of(built), shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
def test_cp_r_equals_build_small(mount, models, tmp_path, dtype):
    cfg = {"merge_method": "task_arithmetic", "base_model": models[(3, dtype)],
           "models": [{"model": models[(1, dtype, "sharded")], "parameters": {"weight": 0.5}},
                      {"model": models[(2, dtype)], "parameters": {"weight": 0.5}}],
           "parameters": {"lambda": 0.5}}
    config = mmtest.write_config(tmp_path, cfg)
    built = mmtest.build(config, tmp_path / "built", "--out-shard-size", "20K")
    mmtest.assert_matches_reference(built, config_eval.evaluate(cfg).tensors)
    dest = tmp_path / "copy"
    with mount(config, "--out-shard-size", "20K") as m:
        subprocess.run(["cp", "-r", m.path, str(dest)], check=True)
    assert mmtest.files_of(str(dest)) == mmtest.files_of(built)
    _, mismatch, errors = filecmp.cmpfiles(str(dest), built, mmtest.files_of(built), shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


def test_read_only(mount, merge_case):
    with mount(merge_case["config"], *merge_case["args"]) as m:
        name = merge_case["shards"][0]
        with pytest.raises(OSError):
            with open(os.path.join(m.path, name), "r+b"):
                pass
        with pytest.raises(OSError):
            with open(os.path.join(m.path, "new-file"), "wb"):
                pass
        assert mmtest.files_of(m.path) == sorted(merge_case["files"])
