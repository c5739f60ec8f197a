"""Raw configuration: YAML files, merged in order, with `${env:VAR}` expansion.

Produces plain data plus the file each key came from, so that validation can
name the file, the key path and the fix. This is the Collector's confmap step;
typed decoding happens afterwards in `pipeline.config`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.types import join
from pipeline.errors import ConfigIssue

_ENV_RE = re.compile(r"\$\$|\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{([^}]*)\}")


@dataclass
class RawConfig:
    """Merged YAML data and, for each key path, the file that set it last."""

    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def origin(self, path: str) -> str:
        """The file a key path came from: the longest known prefix of it."""
        p = path
        while p:
            if p in self.origins:
                return self.origins[p]
            cut = max(p.rfind("."), p.rfind("["))
            if cut <= 0:
                break
            p = p[:cut]
        if p in self.origins:
            return self.origins[p]
        return self.files[-1] if self.files else ""


# How many nodes a document may expand to through aliases. PyYAML shares an aliased
# object instead of copying it, so a "billion laughs" document parses quickly and
# explodes later, in whatever walks the data (env expansion, decoding); the bound
# is checked on the composed node graph, before anything is constructed.
MAX_ALIAS_EXPANSION = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_alias_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that aliases expand past MAX_ALIAS_EXPANSION nodes, or that contains itself.

    One iterative post-order walk over the distinct nodes (each counted once,
    with its expanded size memoised), so the check costs what the text costs,
    however far the aliases would expand it. Raises yaml.YAMLError.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    aliased = False
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            if aliased and total > MAX_ALIAS_EXPANSION:
                raise yaml.composer.ComposerError(
                    None, None,
                    f"aliases expand this document to more than {MAX_ALIAS_EXPANSION} nodes (a 'billion laughs' "
                    "document?); write the repeated values out or use fewer aliases", node.start_mark)
            sizes[key] = total
            continue
        if key in on_path:
            raise yaml.composer.ComposerError(None, None, "an alias refers to itself (a recursive structure); "
                                                          "config values cannot contain themselves", node.start_mark)
        if key in sizes:  # a second reference to a finished node: an alias
            aliased = True
            continue
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that reports duplicate keys instead of silently keeping the last, and bounds aliases."""

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        if node is not None:
            _check_alias_expansion(node)
        return node


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # `<<: *base`: merged keys may be overridden, SafeLoader merges them
            continue
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):  # `{a: 1}: x` or `? [1, 2]`: a set lookup would raise TypeError
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value, not a mapping or a list", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, name: str) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """One YAML document as a mapping, or an issue saying where the syntax broke."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except RecursionError:
        # PyYAML composes and constructs recursively: a pathologically nested document
        # must be a readable issue, not a traceback.
        return {}, [ConfigIssue("", "invalid YAML: the document is nested too deeply", file=name)]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        msg = f"{context}, {problem}" if context and problem != str(e) else problem
        return {}, [ConfigIssue("", f"invalid YAML: {where}{msg}", file=name)]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, [ConfigIssue("", "the top level must be a mapping with receivers, processors, exporters and service",
                                file=name)]
    return data, []


def _record(data: Any, path: str, origin: str, origins: dict[str, str]) -> None:
    origins[path] = origin
    if isinstance(data, dict):
        for k, v in data.items():
            _record(v, join(path, k), origin, origins)


def merge_into(base: dict[str, Any], overlay: Mapping[str, Any], path: str, origin: str,
               origins: dict[str, str]) -> None:
    """Deep-merge maps, later keys winning; lists and scalars are replaced (as the Collector does)."""
    for k, v in overlay.items():
        p = join(path, k)
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge_into(base[k], v, p, origin, origins)
        else:
            base[k] = v
            _record(v, p, origin, origins)


def load_files(paths: list[str]) -> tuple[RawConfig, list[ConfigIssue]]:
    raw = RawConfig()
    issues: list[ConfigIssue] = []
    for p in paths:
        try:
            text = Path(p).read_text(encoding="utf-8")
        except OSError as e:
            issues.append(ConfigIssue("", f"cannot read config file: {e.strerror or e}", file=p))
            continue
        except UnicodeDecodeError:
            issues.append(ConfigIssue("", "config file is not UTF-8 text", file=p))
            continue
        raw.files.append(p)
        data, errs = parse_yaml(text, p)
        issues.extend(errs)
        merge_into(raw.data, data, "", p, raw.origins)
    return raw, issues


def load_texts(texts: list[tuple[str, str]]) -> tuple[RawConfig, list[ConfigIssue]]:
    """Like load_files, for (name, yaml text) pairs (embedded default config, tests)."""
    raw = RawConfig()
    issues: list[ConfigIssue] = []
    for name, text in texts:
        raw.files.append(name)
        data, errs = parse_yaml(text, name)
        issues.extend(errs)
        merge_into(raw.data, data, "", name, raw.origins)
    return raw, issues


def expand_env(data: Any, env: Mapping[str, str] | None = None, path: str = "",
               issues: list[ConfigIssue] | None = None) -> Any:
    """Expand `${env:VAR}`, `${VAR}` and `${env:VAR:-default}` in every string; `$$` is a literal `$`.

    A value that is exactly one reference is re-read as a YAML scalar, so
    `${env:PORT}` can be a number and `${env:ON}` a boolean (the Collector does the same).
    """
    env = os.environ if env is None else env
    issues = [] if issues is None else issues
    if isinstance(data, dict):
        return {k: expand_env(v, env, join(path, k), issues) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, env, join(path, i), issues) for i, v in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group(3) is not None:
            issues.append(ConfigIssue(path, f"invalid reference '{m.group(0)}': "
                                            "write ${env:NAME} or ${env:NAME:-default}"))
            return ""
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        issues.append(ConfigIssue(path, f"environment variable {name} is not set; "
                                        f"set it, or give a default with ${{env:{name}:-value}}"))
        return ""

    whole = _ENV_RE.fullmatch(data)
    out = _ENV_RE.sub(repl, data)
    if whole and whole.group(0) != "$$" and out != "":
        try:
            scalar = yaml.safe_load(out)
        except yaml.YAMLError:
            return out
        if isinstance(scalar, (int, float, bool)):
            return scalar
    return out
