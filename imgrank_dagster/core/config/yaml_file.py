"""Reading a YAML file people edit by hand: every problem names the file and the line.

PyYAML alone lets a duplicated key silently replace the first one, and a byte that is not
UTF-8 (even in a comment) raises a bare UnicodeDecodeError without the file's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """The file cannot be read as YAML; the message names the file and, where known, the line."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, line: int, first_line: int) -> None:
        super().__init__(f"line {line}: duplicate key {key!r} (first at line {first_line})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in first_lines:
                    raise _DuplicateKey(key, line, first_lines[key])
                first_lines[key] = line
            except TypeError:
                continue  # an unhashable key: the base constructor reports it
        return super().construct_mapping(node, deep=deep)


def read_yaml_document(path: Path) -> object:
    """The parsed document of a UTF-8 YAML file; YamlFileError names what is wrong and where."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise YamlFileError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise YamlFileError(
            f"{path}: line {line}, column {column}: byte 0x{data[error.start]:02x} is not "
            "UTF-8 text (save the file as UTF-8)"
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except _DuplicateKey as error:
        raise YamlFileError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise YamlFileError(f"{path}: not valid YAML: {error}") from None
    except RecursionError:
        raise YamlFileError(f"{path}: not valid YAML: nested too deeply") from None
