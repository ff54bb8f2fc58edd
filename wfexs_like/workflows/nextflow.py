"""The containers a Nextflow pipeline runs, resolved for one engine the way Nextflow resolves them.

For every process the entry workflow reaches, the container comes from (least
to most specific, as in Nextflow) ``process.container``, the process's own
``container`` directive, ``withLabel:`` selectors, then ``withName:``
selectors on its declared, aliased and fully qualified names. The value is
evaluated statically for the target engine (nf-core's
``workflow.containerEngine == 'singularity' ? sif : docker`` picks one
branch), ``params`` come from the scripts, the config and the caller's
params file, and the engine's ``*.registry`` prefix is applied as
Nextflow's ``ContainerHandler`` does. What cannot be known statically is
reported as ``dynamic`` with what it waits for.

``nextflow inspect`` is the exact alternative when Nextflow is installed;
it runs the pipeline's Groovy, so it is only used when asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .base import ContainerRef, IncludeGuard, Kind, ScanOptions, WorkflowScanError, read_workflow_file
from .groovy import ID, OP, Node, raw_text, tokenize
from .groovy_eval import (
    Choice,
    Closure,
    Env,
    Unknown,
    alternatives,
    call_closure,
    evaluate,
    to_string,
    truthy,
)
from .nextflow_config import NextflowConfig, Setting, read_config
from .nextflow_inspect import inspect
from .nextflow_names import normalize
from .nextflow_script import Conditional, Directive, Instance, Module, ScriptReader

LANGUAGE = "nextflow"
CONFIG_NAME = "nextflow.config"
MAIN_NAME = "main.nf"


def claims(path: Path) -> bool:
    """A ``.nf`` script, a ``nextflow.config``, or a directory holding a pipeline."""
    if path.is_dir():
        return (path / MAIN_NAME).is_file() or (path / CONFIG_NAME).is_file()
    return path.suffix == ".nf" or path.name == CONFIG_NAME


def scan(path: Path, options: ScanOptions) -> list[ContainerRef]:
    """Every container reference of the pipeline at ``path`` (a directory, its main script, its
    ``nextflow.config``, or a lone module), resolved for ``options.engine``."""
    return scan_many([path], options)


def scan_many(paths: list[Path], options: ScanOptions) -> list[ContainerRef]:
    """The references of every pipeline and module among ``paths``, each read in its pipeline's context.

    A directory walk hands over each ``.nf`` and ``nextflow.config`` separately, but a module read
    alone misses its pipeline's config (registry prefix, params, selectors) and would report other
    tags than the pipeline runs. So pipelines are scanned first: a directory with a
    ``nextflow.config`` (main script from ``manifest.mainScript``, else ``main.nf``), or a script
    with an entry workflow. Scripts none of them includes are then read as modules, under the
    config of the innermost pipeline directory that holds them.
    """
    projects: dict[Path, Path] = {}
    scripts: list[Path] = []
    for path in paths:
        if path.is_dir():
            projects.setdefault(path.resolve(), path)
        elif path.name == CONFIG_NAME:
            projects.setdefault(path.parent.resolve(), path.parent)
        else:
            scripts.append(path)
            if (path.parent / CONFIG_NAME).is_file():
                projects.setdefault(path.parent.resolve(), path.parent)
    refs: list[ContainerRef] = []
    read: set[Path] = set()
    for project in projects.values():
        found, files = _pipeline(project, None, options)
        refs += found
        read |= files
    for script in scripts:
        if script.resolve() not in read and script.parent.resolve() not in projects and _has_entry(script):
            found, files = _pipeline(script.parent, script, options, configs=[])
            refs += found
            read |= files
    pipelines = bool(refs) or bool(read)
    for script in scripts:
        if script.resolve() not in read:
            found, files = _pipeline(_owner(script, projects), script, options, module=True)
            if pipelines:
                found = [
                    replace(r, note=_also(r.note, "in a module no scanned pipeline includes")) for r in found
                ]
            refs += found
            read |= files
    return refs


def _also(note: str | None, more: str) -> str:
    return f"{note}; {more}" if note else more


def _pipeline(
    project: Path,
    main: Path | None,
    options: ScanOptions,
    *,
    configs: list[Path] | None = None,
    module: bool = False,
) -> tuple[list[ContainerRef], set[Path]]:
    """(references, files read) of one pipeline; ``module``: ``main`` is a module no pipeline includes,
    read with ``project``'s config but without reporting that config's own unmatched rules."""
    if configs is None:
        configs = [project / CONFIG_NAME] if (project / CONFIG_NAME).is_file() else []
    guard = IncludeGuard()
    config = read_config(configs, options, guard, project)
    if main is None:
        main = _main_script(project, config)
    reader = ScriptReader(guard)
    modules: list[Module] = []
    if main is not None:
        reader.read(main)
        modules = list(reader.modules.values())
    files = set(reader.modules)
    if options.nextflow_inspect and not module:
        if main is None:
            raise WorkflowScanError(
                f"{project}: no main script (neither manifest.mainScript nor {MAIN_NAME}) for "
                "nextflow inspect; give the pipeline's .nf file"
            )
        return inspect(main, options, config), files
    _script_params(modules, config, options)
    instances = reader.instances(modules[0]) if modules else []
    return _Resolver(config, options, project, report_unmatched=not module).refs(instances), files


def _main_script(project: Path, config: NextflowConfig) -> Path | None:
    name = config.scopes.get("manifest.mainScript")
    for candidate in (name if isinstance(name, str) else None, MAIN_NAME):
        if candidate and (project / candidate).is_file():
            return project / candidate
    return None


def _owner(script: Path, projects: dict[Path, Path]) -> Path:
    """The innermost pipeline directory holding ``script``, else the script's own directory."""
    resolved = script.resolve()
    holders = [key for key in projects if resolved.is_relative_to(key)]
    return projects[max(holders, key=lambda k: len(k.parts))] if holders else script.parent


def _has_entry(script: Path) -> bool:
    """Whether ``script`` declares an entry workflow (``workflow { ... }``) at its top level."""
    tokens = tokenize(read_workflow_file(script), str(script))
    depth = 0
    for i, tok in enumerate(tokens):
        if tok.kind == OP and tok.text in "{}":
            depth += 1 if tok.text == "{" else -1
        elif depth == 0 and tok.kind == ID and tok.text == "workflow" and tokens[i + 1].text == "{":
            return True
    return False


def _script_params(modules: list[Module], config: NextflowConfig, options: ScanOptions) -> None:
    """Script defaults (``params.x = ...`` in a .nf) count only where config and caller are silent."""
    for module in modules:
        for name, node in module.param_defaults:
            if name not in config.params:
                env = Env(module.src, str(module.path), config.params, options.engine)
                config.params[name] = evaluate(node, env)


# -- resolution ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """Where an effective container value was written, and which rule put it there."""

    file: Path
    line: int
    raw: str
    rule: str  # "directive", "process.container", "withName: 'X'", ...


@dataclass(frozen=True)
class _Found:
    source: _Source
    value: Any
    conditions: tuple[str, ...]


class _Resolver:
    def __init__(
        self, config: NextflowConfig, options: ScanOptions, project: Path, *, report_unmatched: bool
    ) -> None:
        self.config = config
        self.report_unmatched = report_unmatched
        self.project = project
        self.engine = options.engine
        #: config rules that matched a process (perhaps overridden there by a more specific one)
        self.matched: set[str] = set()

    def refs(self, instances: list[Instance]) -> list[ContainerRef]:
        groups: dict[tuple, list[str]] = {}
        for instance in instances:
            for found in self._container(instance):
                label = instance.fully_qualified + (
                    "" if instance.called else " (not called from the entry workflow)"
                )
                for key in self._keys(found):
                    groups.setdefault(key, []).append(label)
        for rule, source_setting in self._unused() if self.report_unmatched else ():
            found = self._value(source_setting, rule, None)
            for key in self._keys(found):
                groups.setdefault(key, []).append("")
        out = []
        for (file, line, raw, tag, kind, confidence, note), names in groups.items():
            who = [n for n in dict.fromkeys(names) if n]
            parts = [f"process {', '.join(who)}" if who else "", note]
            out.append(
                ContainerRef(
                    file=file,
                    line=line,
                    raw=raw,
                    tag=tag,
                    kind=kind,
                    confidence=confidence,
                    language=LANGUAGE,
                    note="; ".join(p for p in parts if p) or None,
                )
            )
        return sorted(out, key=lambda r: (r.file, r.line, r.tag or "", r.note or ""))

    # which rule gives a process its container

    def _container(self, instance: Instance) -> list[_Found]:
        """What gives ``instance`` its container: the most specific matching selector; else its own
        directive; else (on every path through the body that sets none) ``process.container``."""
        process = instance.process
        env = self._env(process.module, instance)
        generic = self.config.process.get("container")
        if generic is not None:
            self.matched.add("process.container")
        selected = self._selected(instance, "container")
        self.matched.update(rule for rule, _ in selected)
        if selected:
            rule, setting = selected[-1]
            return [self._value(setting, rule, env)]
        out = []
        for node, conds in _directive_nodes(process.body, env):
            if node is not None:
                source = _Source(
                    process.module.path, node.line, raw_text(process.module.src, node), "directive"
                )
                out.append(_Found(source, _resolve(evaluate(node, env), env), conds))
            elif generic is not None:
                out.append(replace(self._value(generic, "process.container", env), conditions=conds))
        return out

    def _selected(self, instance: Instance, key: str) -> list[tuple[str, Setting]]:
        """The ``key`` settings of every selector matching ``instance``, in the order Nextflow applies
        them: label selectors, then name selectors per name from declared to fully qualified."""
        out = []
        labels = instance.process.labels or [""]
        for rule, sel in self.config.selectors.items():
            if sel.kind == "withLabel" and key in sel.settings and _matches_labels(labels, sel.pattern):
                out.append((rule, sel.settings[key]))
        for name in instance.names():
            for rule, sel in self.config.selectors.items():
                if sel.kind == "withName" and key in sel.settings and _matches_name(name, sel.pattern):
                    out.append((rule, sel.settings[key]))
        return out

    def _ext(self, instance: Instance) -> dict[str, Any]:
        """``task.ext`` as the config leaves it for this process (nf-core's ternary reads
        ``task.ext.singularity_pull_docker_container``); a key no rule sets is null, as in Groovy."""
        ext = {k[4:]: s.value for k, s in self.config.process.items() if k.startswith("ext.")}
        keys = {k for sel in self.config.selectors.values() for k in sel.settings if k.startswith("ext.")}
        for key in sorted(keys):
            for _, setting in self._selected(instance, key):
                ext[key[4:]] = setting.value
        return ext

    def _env(self, module: Module, instance: Instance) -> Env:
        names = {
            "projectDir": str(self.project),
            "baseDir": str(self.project),
            "moduleDir": str(module.path.parent),
            "launchDir": Unknown(("launchDir",)),
        }
        return Env(
            module.src,
            str(module.path),
            self.config.params,
            self.engine,
            task_ext=self._ext(instance),
            process=instance.simple,
            names=names,
        )

    def _value(self, setting: Setting, rule: str, env: Env | None) -> _Found:
        value = setting.value
        if isinstance(value, Closure):
            value = call_closure(value, env or Env(value.src, value.where, self.config.params, self.engine))
        return _Found(_Source(setting.file, setting.line, setting.raw, rule), value, ())

    def _unused(self) -> Iterable[tuple[str, Setting]]:
        """Config containers that match no scanned process. A scan may miss a process (a module
        it could not see), so they are reported; those that matched but were overridden everywhere
        by a more specific rule are not, as Nextflow would never use them."""
        if "container" in self.config.process and "process.container" not in self.matched:
            yield "process.container", self.config.process["container"]
        for rule, sel in self.config.selectors.items():
            if "container" in sel.settings and rule not in self.matched:
                yield rule, sel.settings["container"]

    # what a value means for the engine

    def _keys(self, found: _Found) -> list[tuple]:
        src = found.source
        rule = "" if src.rule == "directive" else f"from {_rule_text(src.rule)}"
        if src.rule != "directive" and src.rule not in self.matched:
            rule = f"{_rule_text(src.rule)} matches no process in the scanned files"
        keys = []
        for value, reasons in alternatives(found.value):
            conds = (*found.conditions, *reasons)
            kind, tag, notes = self._classify(value)
            if tag is None and kind is None:
                continue  # no container (null or ''): the process runs on the host
            dynamic = bool(conds) or isinstance(value, Unknown) or any(n.startswith("needs") for n in notes)
            note = "; ".join(p for p in (rule, *notes, *conds) if p)
            raw = src.raw.strip()
            keys.append(
                (str(src.file), src.line, raw, tag, kind or "docker", "dynamic" if dynamic else "exact", note)
            )
        return keys

    def _classify(self, value: Any) -> tuple[Kind | None, str | None, list[str]]:
        if isinstance(value, Unknown):
            return "docker", None, [f"needs {', '.join(value.reasons)}"]
        if value is None or value is False or value == "":
            return None, None, []
        if not isinstance(value, str):
            return "docker", None, [f"needs a string, the value is {to_string(value)!r}"]
        return normalize(value, self.engine, self.config, self.project)


def _resolve(value: Any, env: Env) -> Any:
    return call_closure(value, env) if isinstance(value, Closure) else value


def _directive_nodes(
    body: tuple[Directive | Conditional, ...], env: Env
) -> list[tuple[Node | None, tuple[str, ...]]]:
    """The container directive(s) a process body leaves in effect, each with the run-time
    conditions that select it (``if`` on a known condition takes one branch, else both); None
    where a path through the body sets no container."""
    alts: list[tuple[Node | None, tuple[str, ...]]] = [(None, ())]

    def run(stmts: tuple[Directive | Conditional, ...], alts: list) -> list:
        for stmt in stmts:
            if isinstance(stmt, Directive):
                alts = [(stmt.node, conds) for _, conds in alts]
                continue
            cond = evaluate(stmt.cond, env)
            if not _known(cond):
                text = " ".join(env.src[stmt.cond.start : stmt.cond.end].split())
                yes = [(n, (*c, f"chosen at run time by: {text}")) for n, c in alts]
                no = [(n, (*c, f"chosen at run time by: !({text})")) for n, c in alts]
                alts = run(stmt.then, yes) + run(stmt.otherwise, no)
            else:
                alts = run(stmt.then if truthy(cond) else stmt.otherwise, alts)
        return alts

    found = list(dict.fromkeys(run(body, alts)))
    if len({node for node, _ in found}) == 1:
        return [(found[0][0], ())]  # every path leaves the same directive: no condition chooses it
    return found


def _known(value: Any) -> bool:
    return not isinstance(value, (Unknown, Closure, Choice))


def _rule_text(rule: str) -> str:
    if rule.startswith(("withName:", "withLabel:")):
        kind, _, pattern = rule.partition(":")
        return f"{kind}: '{pattern.strip()}'"
    return rule


def _matches_name(name: str, pattern: str) -> bool:
    """Nextflow's withName: a full regex match, inverted by a leading ``!``."""
    negated = pattern.startswith("!")
    if negated:
        pattern = pattern[1:].strip()
    return _fullmatch(pattern, name) != negated


def _matches_labels(labels: list[str], pattern: str) -> bool:
    """Nextflow's withLabel: true when any label matches (with ``!``: when none does)."""
    negated = pattern.startswith("!")
    if negated:
        pattern = pattern[1:].strip()
    return any(_fullmatch(pattern, label) for label in labels) != negated


def _fullmatch(pattern: str, text: str) -> bool:
    try:
        return re.fullmatch(pattern, text) is not None
    except re.error:
        return pattern == text


__all__ = ["claims", "scan", "scan_many"]
