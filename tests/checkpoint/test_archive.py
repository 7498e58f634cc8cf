""".nemo archives are read in place: every layout reads the same from the archive as from the extracted
directory, nothing is unpacked, and hostile archives (tar bombs, links, traversal, duplicate or
conflicting names, truncation) are refused with one line naming the file."""
from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from nemotron.checkpoint import megatron
from nemotron.checkpoint.archive import ArchiveLimits, open_archive
from nemotron.checkpoint.load import load_config, load_model
from nemotron.checkpoint.nemo import read_nemo, read_nemo_config
from nemotron.cli.main import main
from nemotron.errors import CheckpointError
from tests.checkpoint.test_nemo import (
    CONFIG, assert_same, hf_state, stack_layers, tar_dir, write_root, write_zarr_array, yaml_config,
)


def single_file_root(tmp_path: Path, state=None) -> Path:
    root = write_root(tmp_path / "src", yaml_config())
    torch.save(megatron.hf_to_megatron(state or hf_state(), CONFIG), root / "model_weights.ckpt")
    return root


@pytest.fixture(autouse=True)
def no_unpacking(monkeypatch):
    """Reading an archive must not create temporary files or directories at all."""
    def refuse(*args, **kwargs):
        raise AssertionError("an archive was unpacked to a temporary location")

    for name in ("mkdtemp", "mkstemp", "TemporaryDirectory", "NamedTemporaryFile"):
        monkeypatch.setattr(tempfile, name, refuse)


# ---- every layout reads the same from the archive ------------------------------------------------
def test_zarr_layout_from_an_archive(tmp_path):
    state = hf_state()
    root = write_root(tmp_path / "src", yaml_config(precision="bf16-mixed"))
    weights = root / "model_weights"
    weights.mkdir()
    (weights / "metadata.json").write_text(json.dumps({"sharded_backend": "zarr"}))
    for name, tensor in stack_layers(megatron.hf_to_megatron(state, CONFIG)).items():
        write_zarr_array(weights / name, tensor, "bfloat16")
    archive = tar_dir(root, tmp_path / "zarr.nemo")
    assert_same(read_nemo(archive).state_dict, read_nemo(root).state_dict)
    assert read_nemo_config(archive) == read_nemo_config(root) == CONFIG.replace(torch_dtype="bfloat16")


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_torch_dist_layout_from_an_archive(tmp_path):
    state = hf_state()
    root = write_root(tmp_path / "src", yaml_config())
    weights = root / "model_weights"
    dcp.save(stack_layers(megatron.hf_to_megatron(state, CONFIG)), checkpoint_id=weights, no_dist=True)
    (weights / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist"}))
    archive = tar_dir(root, tmp_path / "dist.nemo")
    assert_same(read_nemo(archive, trust_pickle=True).state_dict, state)


@pytest.mark.parametrize("gzip", [False, True])
def test_single_file_layout_loads_bitwise_from_an_archive(tmp_path, gzip):
    state = hf_state()
    archive = tar_dir(single_file_root(tmp_path, state), tmp_path / "model.nemo", gzip)
    assert_same(read_nemo(archive).state_dict, state)
    assert load_config(archive) == CONFIG


def test_info_reads_the_config_and_tensor_headers_only(tmp_path):
    """A 64 MB weight file: `info` reads a few kilobytes of it (Linux counts bytes read in /proc)."""
    state = hf_state()
    weights = megatron.hf_to_megatron(state, CONFIG)
    weights["model.decoder.layers.0.self_attention.linear_qkv._extra_state"] = torch.zeros(16 << 20)
    root = write_root(tmp_path / "src", yaml_config())
    torch.save(weights, root / "model_weights.ckpt")
    archive = tar_dir(root, tmp_path / "big.nemo")
    io_file = Path(f"/proc/{os.getpid()}/io")
    if not io_file.is_file():
        pytest.skip("needs /proc/<pid>/io")

    def bytes_read() -> int:
        return int(dict(line.split(": ") for line in io_file.read_text().splitlines())["rchar"])

    assert read_nemo_config(archive) == CONFIG  # the first call imports modules, whose reads count too
    before = bytes_read()
    assert read_nemo_config(archive) == CONFIG
    assert bytes_read() - before < 4 << 20, "info read the weights"
    assert archive.stat().st_size > 64 << 20


# ---- hostile archives ----------------------------------------------------------------------------
def sparse_member_header(name: str, real_size: int, stored: int) -> bytes:
    """An old-GNU sparse member (type 'S'): `stored` bytes of data standing for `real_size` bytes."""
    info = tarfile.TarInfo(name)
    info.type, info.size = tarfile.GNUTYPE_SPARSE, stored
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[386:398] = b"%011o\0" % 0  # sparse map: one region at offset 0 ...
    header[398:410] = b"%011o\0" % stored  # ... of `stored` bytes
    header[482] = 0  # no extension headers
    header[483:495] = b"%011o\0" % real_size  # the size it unpacks to
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header[:512])
    return bytes(header[:512])


def with_sparse_bomb(archive: Path, real_size: int = 3 << 30) -> Path:
    """Append a 3 GiB sparse member: a few hundred bytes in the archive."""
    with tarfile.open(archive) as tar:  # where the members end and the end-of-archive blocks begin
        end = max(m.offset_data + -(-m.size // 512) * 512 for m in tar.getmembers())
    data = archive.read_bytes()
    body = sparse_member_header("./bomb.bin", real_size, 512) + b"x" * 512
    archive.write_bytes(data[:end] + body + bytes(1024))
    return archive


def test_the_sparse_bomb_is_parsed_as_sparse_by_tarfile(tmp_path):
    archive = with_sparse_bomb(tar_dir(single_file_root(tmp_path), tmp_path / "bomb.nemo"))
    with tarfile.open(archive) as tar:
        bomb = tar.getmember("./bomb.bin")
    assert bomb.issparse() and bomb.size == 3 << 30 and archive.stat().st_size < 1 << 20


@pytest.mark.parametrize("command", ["info", "generate", "convert"])
def test_a_sparse_bomb_is_refused_without_writing(tmp_path, capsys, command):
    archive = with_sparse_bomb(tar_dir(single_file_root(tmp_path), tmp_path / "bomb.nemo"))
    argv = {"info": ["info", str(archive)], "generate": ["generate", str(archive), "hi"],
            "convert": ["convert", str(archive), str(tmp_path / "out")]}[command]
    start = time.perf_counter()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sparse member './bomb.bin'" in err and str(archive) in err
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "out").exists()


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"x", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def hostile(tmp_path: Path, *members: tuple[str, dict]) -> Path:
    archive = tmp_path / "hostile.nemo"
    root = single_file_root(tmp_path)
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
        for name, fields in members:
            add_member(tar, name, **fields)
    return archive


@pytest.mark.parametrize("members, message", [
    ([("./link", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})], "holds a link './link' -> '/etc/passwd'"),
    ([("./hard", {"type": tarfile.LNKTYPE, "linkname": "model_config.yaml"})], "holds a link './hard'"),
    ([("../escape.txt", {})], "unsafe member name '../escape.txt'"),
    ([("/etc/cron.d/x", {})], "unsafe member name '/etc/cron.d/x'"),
    ([("./model_config.yaml", {"data": b"num_layers: 1\n"})], "holds './model_config.yaml' twice"),
    ([("./sub", {}), ("./sub/inner", {})], "holds both a file and a directory named 'sub'"),
    ([("./sub", {}), ("./sub", {"type": tarfile.DIRTYPE})], "holds both a file and a directory named './sub'"),
    ([("./fifo", {"type": tarfile.FIFOTYPE})], "not a regular file"),
])
def test_hostile_members_are_refused(tmp_path, capsys, members, message):
    archive = hostile(tmp_path, *members)
    for read in (read_nemo, read_nemo_config):
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            read(archive)
        assert str(archive) in str(err.value) and "\n" not in str(err.value)
    for argv in (["info", str(archive)], ["generate", str(archive), "hi"], ["convert", str(archive), "out"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message.split("'")[0] in err


def test_limits_per_member_in_total_and_for_compressed_archives(tmp_path):
    root = single_file_root(tmp_path)
    plain = tar_dir(root, tmp_path / "plain.nemo")
    weights = (root / "model_weights.ckpt").stat().st_size
    with pytest.raises(CheckpointError, match="model_weights.ckpt' declares .* more than the limit"):
        read_nemo(plain, limits=ArchiveLimits(max_member_bytes=weights - 1))
    with pytest.raises(CheckpointError, match="bytes of members, more than the limit"):
        read_nemo(plain, limits=ArchiveLimits(max_total_bytes=weights))
    with pytest.raises(CheckpointError, match="more than 2 members"):
        read_nemo(plain, limits=ArchiveLimits(max_members=2))
    with pytest.raises(CheckpointError, match="model_config.yaml' is .* for a text file parsed whole"):
        read_nemo(plain, limits=ArchiveLimits(max_text_bytes=10))
    bomb = tmp_path / "zeros.nemo"  # 256 MB of zeros compress to a few hundred KB
    with tarfile.open(bomb, "w:gz") as tar:
        tar.add(root, arcname=".")
        add_member(tar, "./zeros.bin", bytes(256 << 20))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match="for a compressed archive of this size"):
        read_nemo_config(bomb)


@pytest.mark.parametrize("gzip", [False, True])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.97])
def test_truncated_archives(tmp_path, capsys, gzip, keep):
    archive = tar_dir(single_file_root(tmp_path), tmp_path / "model.nemo", gzip)
    data = archive.read_bytes()
    archive.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError) as err:
        read_nemo(archive)
    assert str(archive) in str(err.value) and ("truncated" in str(err.value) or "corrupt" in str(err.value)
                                               or "no model_config.yaml" in str(err.value))
    for argv in (["info", str(archive)], ["generate", str(archive), "hi"],
                 ["convert", str(archive), str(tmp_path / "out")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {archive}") and err.count("\n") == 1


@pytest.mark.parametrize("content, message", [
    (b"", "is neither a GGUF file nor a .nemo archive"),
    (b"\x1f\x8b\x08\x00garbage", "truncated or corrupt|not a readable .nemo archive"),
    (b"PK\x03\x04" + bytes(600), "is neither a GGUF file nor a .nemo archive"),
])
def test_files_that_are_not_archives(tmp_path, content, message):
    path = tmp_path / "model.nemo"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_archive_paths_behave_like_paths(tmp_path):
    archive = tar_dir(single_file_root(tmp_path), tmp_path / "model.nemo")
    with open_archive(archive) as opened:
        root = opened.root
        assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in (tmp_path / "src").iterdir())
        assert (root / "model_config.yaml").is_file() and not (root / "nothing").exists()
        assert (root / "model_config.yaml").read_bytes() == (tmp_path / "src" / "model_config.yaml").read_bytes()
        assert [p.name for p in root.glob("*_tokenizer.model")] == ["a1b2c3d4_tokenizer.model"]
        with (root / "model_weights.ckpt").open() as handle:
            assert handle.read() == (tmp_path / "src" / "model_weights.ckpt").read_bytes()


@pytest.mark.parametrize("first", [True, False])
def test_an_oversized_pax_header_is_refused_before_tarfile_reads_it(tmp_path, first):
    """tarfile reads a pax header whole before yielding its member: a gzip archive of a few MB could
    make it read gigabytes. 2 MiB stands in for the gigabyte here."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, 2 << 20
    bomb = info.tobuf(format=tarfile.USTAR_FORMAT) + b"0" * (2 << 20) + bytes(1024)
    plain = tar_dir(single_file_root(tmp_path), tmp_path / "plain.nemo")
    with tarfile.open(plain) as tar:
        end = max(m.offset_data + -(-m.size // 512) * 512 for m in tar.getmembers())
    archive = tmp_path / "pax.nemo"
    data = bomb if first else plain.read_bytes()[:end] + bomb
    with gzip.open(archive, "wb") as handle:
        handle.write(data)
    with pytest.raises(CheckpointError, match="extended \\(pax or long-name\\) header of 2,097,152 bytes"):
        read_nemo_config(archive)
