"""Files that hold secrets: the Fernet key, config.ini with its tokens, the registration.

Each is made mode 0600 from its first byte, never through a symlink or a leftover temp file
planted beside it, and a key file that others may read is refused with the fix named.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.admin.vault import Vault, VaultError, generate_key_file
from bridge.cli.main import main
from bridge.config import registration

SHIPPED = Path(__file__).resolve().parents[2] / "config.ini"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


class _Watch:
    """Records, at every chmod/rename/link the process makes, any file of `folder` that
    others could read at that moment (an audit hook: deterministic, no polling)."""

    def __init__(self, folder: Path):
        self.folder = str(folder)
        self.active = False
        self.exposed: list[tuple[str, str, int]] = []

    def __call__(self, event: str, args: tuple[object, ...]) -> None:
        if not self.active or event not in ("os.chmod", "os.rename", "os.link", "os.remove"):
            return
        self.active = False  # the hook's own calls must not recurse
        try:
            for entry in os.scandir(self.folder):
                if entry.is_file(follow_symlinks=False):
                    bits = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                    if bits & 0o077:
                        self.exposed.append((event, entry.name, bits))
        finally:
            self.active = True


_WATCH = _Watch(Path("/nonexistent"))
sys.addaudithook(_WATCH)  # audit hooks cannot be removed; it only acts while active


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[_Watch]:
    _WATCH.folder, _WATCH.exposed, _WATCH.active = str(tmp_path), [], True
    try:
        yield _WATCH
    finally:
        _WATCH.active = False


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(SHIPPED.read_text())
    path.chmod(0o644)
    return path


# ------------------------------------------------------------------ the key file
def test_the_key_is_never_written_through_a_planted_symlink(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    key = tmp_path / "ircbridge.key"
    (tmp_path / "ircbridge.key.tmp").symlink_to(elsewhere / "stolen")
    generate_key_file(key)
    assert not (elsewhere / "stolen").exists()
    assert not key.is_symlink() and mode(key) == 0o600
    Vault.from_file(key)


def test_a_leftover_temp_file_does_not_decide_the_key_mode(tmp_path: Path,
                                                          umask_022: None) -> None:
    key = tmp_path / "ircbridge.key"
    leftover = tmp_path / "ircbridge.key.tmp"
    leftover.write_bytes(b"junk")
    leftover.chmod(0o644)
    generate_key_file(key)
    assert mode(key) == 0o600
    generate_key_file(key, force=True)
    assert mode(key) == 0o600 and not key.is_symlink()


def test_the_key_is_private_from_its_first_byte(tmp_path: Path, umask_022: None,
                                               watch: _Watch) -> None:
    generate_key_file(tmp_path / "ircbridge.key")
    generate_key_file(tmp_path / "ircbridge.key", force=True)
    assert watch.exposed == []


def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    key = generate_key_file(tmp_path / "secrets.key")
    key.chmod(0o640)
    with pytest.raises(VaultError, match=r"chmod 600 .*secrets\.key"):
        Vault.from_file(key)
    config = _config(tmp_path)
    assert main(["-c", str(config), "generate-registration"]) == 0
    config.write_text(config.read_text().replace("key_file =\n", "key_file = secrets.key\n"))
    capsys.readouterr()
    assert main(["-c", str(config), "check-config"]) == 2
    assert f"chmod 600 {key}" in capsys.readouterr().err
    key.chmod(0o600)
    assert main(["-c", str(config), "check-config"]) == 0


# ------------------------------------------------------------------ config.ini and registration
def test_generate_registration_leaves_config_and_registration_private(
        tmp_path: Path, umask_022: None, watch: _Watch) -> None:
    config = _config(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "registration.yaml.tmp").symlink_to(elsewhere / "stolen.yaml")
    (tmp_path / "config.ini.tmp").symlink_to(elsewhere / "stolen.ini")
    assert main(["-c", str(config), "generate-registration"]) == 0
    assert not (elsewhere / "stolen.yaml").exists() and not (elsewhere / "stolen.ini").exists()
    assert mode(config) == 0o600
    assert mode(tmp_path / "registration.yaml") == 0o600
    assert "as_token" in (tmp_path / "registration.yaml").read_text()
    assert [e for e in watch.exposed if e[1] != "config.ini"] == []  # 0644 before: ours


def test_registration_write_is_private_from_its_first_byte(tmp_path: Path, umask_022: None,
                                                          watch: _Watch) -> None:
    from bridge.config import ini as config_module

    config = _config(tmp_path)
    config_module.fill_tokens(config, "a" * 64, "b" * 64)
    config.chmod(0o600)
    watch.exposed.clear()
    registration.write(config_module.load(config), tmp_path / "registration.yaml")
    assert watch.exposed == []
    assert mode(tmp_path / "registration.yaml") == 0o600
