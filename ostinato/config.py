"""The config file: read and checked by ``ostinato run`` and ``ostinato doctor`` (main thread,
before anything opens), and its ``[cc]`` table rewritten by MIDI learn (the daemon's
``ostinato-save-cc`` thread, off the MIDI input thread).

Every key is a setting of :mod:`ostinato.settings` and is checked there: an unknown key is
an error with a did-you-mean, a wrong type names the key, the value and what it should be.
The ``[cc]`` table maps MIDI CCs to the settings they drive, or to the take actions a button
triggers (``regenerate``, ``keep``, ``undo``)::

    [cc]
    21 = "temperature"      # CC 21 on any channel
    "2:22" = "top_p"        # CC 22 on channel 2 only (what MIDI learn writes)
    "2:30" = "regenerate"   # a button

(``cc = { 21 = "temperature" }`` on one line reads the same.) Channels are counted 1–16 in
the file, as on a keyboard's display; inside, ``(channel 0–15 or None, cc)``. Channel-mode
CCs 120–127 (a DAW's Stop sends them) are never mapped.

Writes go through tomlkit, so the user's comments, key order and other tables stay as they
were written, and are atomic: a temporary file in the same folder, flushed to disk, then
``os.replace`` — a crash or a full disk mid-write leaves the old file, never half a new one.
This module imports neither the CLI nor the daemon: both import it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ostinato.settings import (
    DAEMON,
    GENERATION,
    KNOBS,
    LEARNABLE,
    TRIGGERS,
    SettingError,
    did_you_mean,
    validate,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

CcKey = tuple[int | None, int]  # (MIDI channel 0..15, or None for any channel; CC number)
CcMap = dict[CcKey, str]  # → the setting the CC drives
CHANNEL_MODE_CCS = range(120, 128)
CC_TABLE_COMMENT = "MIDI CC = setting it drives; channel:CC for one channel (ostinato learn)"


class ConfigError(ValueError):
    """The config file cannot be used: one line that names the file and the problem."""


def default_config_path() -> Path:
    """$XDG_CONFIG_HOME/ostinato/config.toml (~/.config/… when unset): read by `ostinato run`
    when it exists, and where MIDI CC learn saves its map when no --config is given."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ostinato" / "config.toml"


def default_model_dir():
    """The bundled model's folder (a Traversable inside the installed package)."""
    from importlib.resources import files

    return files("ostinato") / "assets" / "default"


@dataclass(frozen=True)
class Config:
    """A checked config file: ``values`` holds only the settings the file sets."""

    path: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)
    cc_map: CcMap = field(default_factory=dict)

    def generation(self) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if k in GENERATION}

    def daemon(self) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if k in DAEMON}


def read_toml(path: Path | str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_config(path: Path | str | None, missing_ok: bool = False) -> Config:
    """Read and check the file at ``path`` (with ``missing_ok``, a file that does not exist
    is an empty one). Raises ConfigError naming the file and the first problem."""
    if path is None:
        return Config()
    path = Path(path)
    if missing_ok and not path.exists():
        return Config(path)
    return parse_config(read_toml(path), path)


def parse_config(data: Mapping[str, Any], path: Path | None = None) -> Config:
    """A parsed TOML document → a checked Config (ConfigError on the first problem)."""
    where = f"{path}: " if path is not None else ""
    settings = {k: v for k, v in data.items() if k != "cc"}
    try:
        values = validate(settings)
        cc_map = parse_cc_table(data.get("cc", {}))
    except SettingError as exc:
        raise ConfigError(f"{where}{exc}") from None
    return Config(path, values, cc_map)


# -- the [cc] table ----------------------------------------------------------------------------
def parse_cc_key(key: str) -> CcKey:
    """``"21"`` → (None, 21); ``"2:21"`` → (1, 21) (channel 2, counted from 1)."""
    channel_text, _, cc_text = str(key).strip().rpartition(":")
    try:
        cc = int(cc_text)
        channel = int(channel_text) - 1 if channel_text else None
    except ValueError:
        raise SettingError(
            f"[cc] key {key!r} must be a CC number, or channel:CC like '2:21'"
        ) from None
    if channel is not None and not 0 <= channel <= 15:
        raise SettingError(f"[cc] key {key!r}: the channel must be 1 to 16")
    if cc in CHANNEL_MODE_CCS:
        raise SettingError(
            f"[cc] key {key!r}: CC 120–127 are channel-mode messages (a DAW's Stop sends "
            "them), never mapped"
        )
    if not 0 <= cc <= 127:
        raise SettingError(f"[cc] key {key!r} must be a CC number 0 to 119")
    return (channel, cc)


def format_cc_key(key: CcKey) -> str:
    channel, cc = key
    return str(cc) if channel is None else f"{channel + 1}:{cc}"


def format_cc_map(cc_map: CcMap) -> str:
    """For the OSC state: ``21:temperature,2:22:top_p`` (split each item at its last ':')."""
    return ",".join(f"{format_cc_key(k)}:{name}" for k, name in _sorted(cc_map))


def parse_cc_table(table: Any) -> CcMap:
    if not isinstance(table, Mapping):
        raise SettingError("cc must be a table of CC number = setting, e.g. [cc] 21 = ...")
    out: CcMap = {}
    for key, name in table.items():
        cc_key = parse_cc_key(key)
        if name not in LEARNABLE:
            suggestion = did_you_mean(str(name), LEARNABLE)
            raise SettingError(
                f"[cc] {key} = {name!r}: a CC can drive {', '.join(KNOBS)}, or trigger "
                f"{', '.join(TRIGGERS)}" + (f" ({suggestion})" if suggestion else "")
            )
        out[cc_key] = name
    return out


def _sorted(cc_map: CcMap) -> list[tuple[CcKey, str]]:
    return sorted(cc_map.items(), key=lambda item: (item[0][1], -1 if item[0][0] is None
                                                    else item[0][0]))  # fmt: skip


# -- writing -----------------------------------------------------------------------------------
def save_cc_map(path: Path | str, cc_map: CcMap) -> None:
    """Write ``cc_map`` as the ``[cc]`` table of the TOML file at ``path`` (made if missing),
    keeping every other key, table and comment; entries that stay keep their own comments.
    Raises OSError, or ConfigError when the file is no longer valid TOML."""
    import tomlkit
    from tomlkit.exceptions import ParseError
    from tomlkit.items import InlineTable, Table

    path = Path(path)
    if path.is_symlink():  # a dotfile manager's link: write the file it points to
        path = path.resolve()
    text = path.read_text() if path.exists() else ""
    try:
        doc = tomlkit.parse(text)
    except ParseError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}): the CC map is not saved") from exc
    entries = {format_cc_key(k): name for k, name in _sorted(cc_map)}
    current = doc.get("cc")
    if isinstance(current, InlineTable):
        inline = tomlkit.inline_table()
        inline.update(entries)
        doc["cc"] = inline
    elif isinstance(current, Table) and not current.is_super_table():
        kept: set[str] = set()
        for key in list(current.keys()):
            try:
                same = format_cc_key(parse_cc_key(key))
            except SettingError:
                same = None
            if same is not None and entries.get(same) == current[key] and same not in kept:
                kept.add(same)
            else:
                del current[key]
        for key, name in entries.items():
            if key not in kept:
                current[key] = name
    else:
        if current is not None:  # dotted keys (cc.21 = …) or something unusable
            del doc["cc"]
        table = tomlkit.table()
        table.comment(CC_TABLE_COMMENT)
        table.update(entries)
        if entries:
            doc["cc"] = table
    write_atomically(path, tomlkit.dumps(doc))


def write_atomically(path: Path, text: str) -> None:
    """Replace the file at ``path`` with ``text`` in one step (same folder, same mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(temp, path.stat().st_mode & 0o7777)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
