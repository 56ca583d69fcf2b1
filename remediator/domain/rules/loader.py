"""Parse rule files (text in, ``RulePack`` out), reporting every problem with file and line.

Reading the files is the caller's job (``remediator.rulefiles``): the domain only parses
text it is given.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import yaml
from pydantic import ValidationError

from remediator.domain.errors import ConfigError
from remediator.domain.plans import ActionKind
from remediator.domain.rules.model import Defaults, Rule, RuleFile, RulePack, ServiceSpec


@dataclass(frozen=True, slots=True)
class RuleProblem:
    file: str
    line: int | None  # 1-based; None when the problem is about the pack as a whole
    field: str  # dotted path such as rules[2].match.matchers[0]; "" for the file itself
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field or '(file)'}: {self.message}"


class RuleFileError(ConfigError):
    """Rule files that cannot be used; ``problems`` lists all of them, not just the first."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(str(problem) for problem in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in rule files:\n{lines}")


@dataclass(frozen=True, slots=True)
class _Parsed:
    name: str
    root: yaml.Node
    content: RuleFile


def load_rule_pack(files: Mapping[str, str]) -> RulePack:
    """Merge rule files (file name -> YAML text) into one pack, or raise ``RuleFileError``."""
    pack, problems = check_rule_pack(files)
    if problems or pack is None:
        raise RuleFileError(problems)
    return pack


def check_rule_pack(files: Mapping[str, str]) -> tuple[RulePack | None, list[RuleProblem]]:
    """Like :func:`load_rule_pack` but returns the problems (for ``rules check``)."""
    problems: list[RuleProblem] = []
    if not files:
        return None, [RuleProblem("(rules)", None, "", "no rule files given")]
    parsed: list[_Parsed] = []
    for name, text in files.items():
        result = _parse_file(name, text, problems)
        if result is not None:
            parsed.append(result)
    # A file that failed to parse leaves the catalog incomplete: "unknown service" would
    # then be noise, so cross-references are checked only when every file parsed.
    pack = _merge(parsed, problems, check_references=len(parsed) == len(files))
    return (None if problems else pack), problems


def _parse_file(name: str, text: str, problems: list[RuleProblem]) -> _Parsed | None:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problems.append(RuleProblem(name, line, "", f"invalid YAML: {exc.problem or exc}"))
        return None
    except yaml.YAMLError as exc:
        problems.append(RuleProblem(name, None, "", f"invalid YAML: {exc}"))
        return None
    if root is None:  # an empty file contributes nothing
        return _Parsed(name, yaml.MappingNode("tag:yaml.org,2002:map", []), RuleFile())
    before = len(problems)
    problems.extend(_duplicate_keys(name, root))
    if not isinstance(data, dict):
        problems.append(
            RuleProblem(name, 1, "", "top level must be a mapping of services, rules, defaults")
        )
        return None
    try:
        content = RuleFile.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            line, field = _locate(root, error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(RuleProblem(name, line, field, message))
        return None
    return None if len(problems) > before else _Parsed(name, root, content)


def _duplicate_keys(
    name: str, node: yaml.Node, path: str = "", visited: set[int] | None = None
) -> Iterator[RuleProblem]:
    # PyYAML keeps the last of two equal keys silently; in a rule file that hides a mistake.
    visited = set() if visited is None else visited
    if id(node) in visited:  # aliases may point back up the tree
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            key_text = str(key.value)
            child = f"{path}.{key_text}" if path else key_text
            if key_text in seen:
                yield RuleProblem(
                    name,
                    key.start_mark.line + 1,
                    child,
                    f"duplicate key (first on line {seen[key_text]})",
                )
            else:
                seen[key_text] = key.start_mark.line + 1
            yield from _duplicate_keys(name, value, child, visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(name, item, f"{path}[{index}]", visited)


def _locate(root: yaml.Node, loc: Sequence[int | str]) -> tuple[int, str]:
    """Map a pydantic error location to (line, dotted field path) in the YAML tree.

    Components that are not in the document (union tags such as ``blue-green``) are
    skipped; a missing field is reported on the line of the key that holds its mapping.
    """
    node = root
    line = root.start_mark.line + 1
    path = ""
    for position, component in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(node, yaml.SequenceNode) and isinstance(component, int):
            if component < len(node.value):
                node = node.value[component]
                line = node.start_mark.line + 1
            path += f"[{component}]"
            continue
        if isinstance(node, yaml.MappingNode) and component == "[key]":
            continue  # the error is about the key itself, already located
        if isinstance(node, yaml.MappingNode):
            entry = next((pair for pair in node.value if pair[0].value == str(component)), None)
            if entry is not None:
                line = entry[0].start_mark.line + 1
                node = entry[1]
                path = f"{path}.{component}" if path else str(component)
                continue
        if last or isinstance(component, int):
            path = f"{path}.{component}" if path else str(component)
    return line, path


def _merge(
    parsed: Sequence[_Parsed], problems: list[RuleProblem], *, check_references: bool
) -> RulePack:
    services: dict[str, ServiceSpec] = {}
    service_origin: dict[str, str] = {}
    service_files: dict[str, _Parsed] = {}
    rules: list[Rule] = []
    origins: dict[str, str] = {}
    defaults: Defaults | None = None
    defaults_origin = ""
    placed: list[tuple[_Parsed, int, Rule]] = []
    for item in parsed:
        for service_name, spec in item.content.services.items():
            line, _ = _locate(item.root, ("services", service_name))
            if service_name in services:
                problems.append(
                    RuleProblem(
                        item.name,
                        line,
                        f"services.{service_name}",
                        f"service defined twice (first at {service_origin[service_name]})",
                    )
                )
                continue
            services[service_name] = spec
            service_origin[service_name] = f"{item.name}:{line}"
            service_files[service_name] = item
        for index, rule in enumerate(item.content.rules):
            line, _ = _locate(item.root, ("rules", index))
            if rule.name in origins:
                problems.append(
                    RuleProblem(
                        item.name,
                        line,
                        f"rules[{index}].name",
                        f"rule {rule.name!r} defined twice (first at {origins[rule.name]})",
                    )
                )
                continue
            origins[rule.name] = f"{item.name}:{line}"
            rules.append(rule)
            placed.append((item, index, rule))
        if item.content.defaults is not None:
            line, _ = _locate(item.root, ("defaults",))
            if defaults is not None:
                problems.append(
                    RuleProblem(
                        item.name,
                        line,
                        "defaults",
                        f"defaults given twice (first at {defaults_origin})",
                    )
                )
            else:
                defaults, defaults_origin = item.content.defaults, f"{item.name}:{line}"
    pack_defaults = defaults or Defaults()
    for item, index, rule in placed if check_references else ():
        problems.extend(_cross_check(item, index, rule, services))
    if check_references:  # the allow-list may sit in a file that did not parse
        problems.extend(_protected_namespaces(services, service_files, pack_defaults))
    return RulePack(services=services, rules=tuple(rules), defaults=pack_defaults, origins=origins)


def _protected_namespaces(
    services: Mapping[str, ServiceSpec], files: Mapping[str, _Parsed], defaults: Defaults
) -> Iterator[RuleProblem]:
    """Catalog entries in namespaces such as kube-system, unless explicitly allowed."""
    for service_name, spec in services.items():
        if spec.namespace not in defaults.protected:
            continue
        item = files[service_name]
        line, field = _locate(item.root, ("services", service_name, "namespace"))
        yield RuleProblem(
            item.name,
            line,
            field,
            f"namespace {spec.namespace!r} is protected: remediator acts there only if "
            f"defaults.allow_protected_namespaces lists it",
        )


# What an action needs from the catalog entry of every service it may act on.
_NEEDS: dict[ActionKind, tuple[str, str]] = {
    ActionKind.SCALE_UP: ("scale", "scale_up needs scale bounds (scale.max_replicas)"),
    ActionKind.SCALE_OR_ROLLBACK: ("scale", "scale_or_rollback needs scale bounds"),
    ActionKind.REVERT_MIGRATION: ("database", "revert_migration needs database settings"),
    ActionKind.RESTORE_CONFIG: ("config", "restore_config needs config.configmaps"),
}


def _cross_check(
    item: _Parsed, index: int, rule: Rule, services: Mapping[str, ServiceSpec]
) -> Iterator[RuleProblem]:
    for position, service_name in enumerate(rule.match.services):
        loc = ("rules", index, "match", "services", position)
        line, field = _locate(item.root, loc)
        spec = services.get(service_name)
        if spec is None:
            known = ", ".join(sorted(services)) or "none"
            yield RuleProblem(
                item.name,
                line,
                field,
                f"unknown service {service_name!r} (catalog has: {known})",
            )
            continue
        need = _NEEDS.get(rule.action)
        if need is not None and getattr(spec, need[0]) is None:
            yield RuleProblem(
                item.name, line, field, f"service {service_name!r} lacks {need[0]}: {need[1]}"
            )
