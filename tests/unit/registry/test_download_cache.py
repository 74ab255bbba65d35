"""The model download cache: per user, private, and verified against the logged manifest."""

from __future__ import annotations

import os
import stat

import pytest

from ftpipe.errors import FtpipeError
from ftpipe.registry.download import download_export
from ftpipe.registry.versions import register
from tests.unit.registry.helpers import with_registry


@pytest.fixture
def registered(trained, tracking_uri, model_name, tmp_path, monkeypatch):
    """(models:/ URI of a registered export, the export directory, the cache's ftpipe dir)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    config, model_dir = trained("full")
    version = register(with_registry(config, tracking_uri, model_name), model_dir)
    return f"models:/{model_name}/{version.version}", model_dir, tmp_path / "xdg" / "ftpipe"


def test_the_cache_is_per_user_private_and_a_tampered_file_is_downloaded_again(
    registered, tracking_uri
):
    ref, model_dir, root = registered
    export = download_export(ref, tracking_uri)

    assert root in export.parents
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "models").stat().st_mode) == 0o700
    weights = export / "model.safetensors"
    original = (model_dir / "model.safetensors").read_bytes()
    assert weights.read_bytes() == original

    weights.write_bytes(b"tampered" + original[8:])  # same size, other bytes
    (export / "extra.py").write_text("import os\n")  # and a file the model never had
    again = download_export(ref, tracking_uri)

    assert again == export
    assert (again / "model.safetensors").read_bytes() == original
    assert not (again / "extra.py").exists()


def test_a_cache_writable_by_others_is_refused_with_the_fix(registered, tracking_uri):
    ref, _, root = registered
    download_export(ref, tracking_uri)
    os.chmod(root, 0o777)

    with pytest.raises(FtpipeError, match=f"{root}.*writable by group or others.*chmod 700"):
        download_export(ref, tracking_uri)


def test_a_cache_entry_writable_by_others_is_refused(registered, tracking_uri):
    ref, _, _ = registered
    export = download_export(ref, tracking_uri)
    os.chmod(export / "config.json", 0o666)

    with pytest.raises(FtpipeError, match=r"config\.json.*writable by group or others.*rm -rf"):
        download_export(ref, tracking_uri)


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_cache_entry_of_another_user_is_refused(registered, tracking_uri):
    ref, _, _ = registered
    export = download_export(ref, tracking_uri)
    os.chown(export / "config.json", 12345, 12345)

    with pytest.raises(FtpipeError, match="owned by uid 12345, not by you"):
        download_export(ref, tracking_uri)
