"""Faults and bad input (issue 20): unreadable files fail with one paragraph naming the file."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import pytest
import yaml

from ftpipe.data.parse import Table
from ftpipe.data.sources import Stream
from ftpipe.errors import DataError
from tests.helpers import balanced_rows, ftpipe, write_csv


def _gzipped_csv(path: Path, rows: int = 2000) -> bytes:
    plain = write_csv(path.with_suffix(""), balanced_rows(rows)).read_bytes()
    data = gzip.compress(plain, mtime=0)
    path.write_bytes(data)
    return data


def _read(path: Path, make_config, **data) -> list[Table]:
    """Every batch prep's streaming reader yields for the input, read to its end."""
    config = make_config(train=str(path), **data).data
    return list(Stream(str(path), config).batches())


def test_truncated_gzip_fails_through_the_cli_naming_the_file(tmp_path, tiny_tokenizer_dir):
    path = tmp_path / "train.csv.gz"
    data = _gzipped_csv(path)
    path.write_bytes(data[: len(data) // 2])
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"train": str(path), "output_dir": str(tmp_path / "prep")},
                "model": {"name": str(tiny_tokenizer_dir)},
            }
        )
    )
    result = ftpipe("prep", "--config", str(config))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "Aborted" not in output
    assert "train.csv.gz" in output
    assert "truncated" in output


def test_truncated_gzip_is_a_data_error(tmp_path, make_config):
    path = tmp_path / "train.csv.gz"
    data = _gzipped_csv(path)
    path.write_bytes(data[:-20])
    with pytest.raises(DataError, match=r"train\.csv\.gz.*truncated"):
        _read(path, make_config)


def test_corrupt_gzip_body_is_a_data_error(tmp_path, make_config):
    path = tmp_path / "train.csv.gz"
    data = bytearray(_gzipped_csv(path))
    data[20:60] = bytes(range(40))  # garbage inside the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train\.csv\.gz.*(corrupt|truncated)"):
        _read(path, make_config)


def test_plain_file_named_gz_is_a_data_error(tmp_path, make_config):
    path = write_csv(tmp_path / "train.csv.gz", balanced_rows(3))
    with pytest.raises(DataError, match=r"train\.csv\.gz.*not gzip") as info:
        _read(path, make_config)
    assert "rename" in str(info.value).lower()


def test_corrupt_parquet_is_a_data_error_with_a_fix(tmp_path, make_config):
    path = tmp_path / "train.parquet"
    path.write_bytes(b"PAR1" + os.urandom(200) + b"PAR1")
    with pytest.raises(DataError, match=r"train\.parquet.*corrupt") as info:
        _read(path, make_config)
    assert "re-export" in str(info.value).lower()


def test_zlib_errors_are_data_errors(tmp_path, make_config, monkeypatch):
    # Some fsspec codecs surface zlib.error directly rather than as OSError.
    import fsspec

    def broken(*args, **kwargs):
        raise zlib.error("Error -3 while decompressing data: invalid stored block lengths")

    monkeypatch.setattr(fsspec, "open", broken)
    path = tmp_path / "train.csv.gz"
    with pytest.raises(DataError, match=r"train\.csv\.gz.*corrupt"):
        _read(path, make_config)


# --- binary input (defect 11) ------------------------------------------------------------


@pytest.mark.parametrize("name", ["train.csv", "train.tsv", "train.jsonl"])
def test_binary_file_is_named_binary_not_a_missing_column(tmp_path, make_config, name):
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match=rf"{name}.*binary") as info:
        _read(path, make_config)
    message = str(info.value)
    assert "no column" not in message
    assert "data.train" in message and "data.format" in message


def test_binary_inside_gzip_is_detected_after_decompression(tmp_path, make_config):
    path = tmp_path / "train.csv.gz"
    path.write_bytes(gzip.compress(b"text,label\n" + b"\x00\x01\x02" * 100))
    with pytest.raises(DataError, match="binary"):
        _read(path, make_config)


def test_binary_check_only_looks_at_the_first_block(tmp_path, make_config):
    rows = balanced_rows(500)
    path = write_csv(tmp_path / "train.csv", [*rows, ["late \x00 nul", "good"]])
    assert sum(map(len, _read(path, make_config))) == len(rows) + 1
