"""The layout keeps its shape: no import cycles inside genkit, lists that follow the kinds derive
from ``registry.KINDS``, the YAML under conf/ states each value once, and what only answers from
genkit's own code does not import Lightning."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from genkit.config import config_dir, train_config
from genkit.registry import KINDS, registry

SOURCE = Path(__file__).resolve().parents[1] / "src" / "genkit"


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside ``if TYPE_CHECKING:``: read by type checkers, never run."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return True
    return False


def imports() -> dict[str, set[str]]:
    """Every genkit module -> the genkit modules it imports anywhere (module level or inside a
    function, where imports are deferred), resolved to modules: ``from genkit.x import y`` is a
    use of ``genkit.x.y`` when that is a module, else of ``genkit.x``."""
    modules = {module_name(path): path for path in SOURCE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        used: set[str] = set()
        for node in ast.walk(tree):
            if type_checking_only(node, parents):
                continue
            if isinstance(node, ast.Import):
                used |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                used |= {
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                }
        graph[name] = {module for module in used if module in modules and module != name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first repeated at the end), if any."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for used in sorted(graph[module]):
            found = visit(used, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    return next((found for module in sorted(graph) if (found := visit(module, []))), None)


def test_genkit_has_no_import_cycles():
    graph = imports()
    assert {"genkit.registry", "genkit.parts.base", "genkit.cli.train"} <= graph.keys(), "the whole package is read"
    assert "genkit.registry" in graph["genkit.parts.encoders"], "imports inside modules are seen"
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"], "and cycles found"
    assert cycle(graph) is None, f"import cycle: {' -> '.join(cycle(graph))}"


def test_train_yaml_chooses_a_default_for_every_kind():
    """A new kind is its table entry, its module and its default here; this names a forgotten one."""
    defaults = yaml.safe_load((config_dir() / "train.yaml").read_text())["defaults"]
    chosen = {key for entry in defaults if isinstance(entry, dict) for key in entry}
    assert set(KINDS) <= chosen, f"conf/train.yaml has no default for {sorted(set(KINDS) - chosen)}"
    cfg = train_config()
    for kind in KINDS:
        assert registry(kind).by_target(cfg[kind]._target_), kind


def presets() -> list[tuple[str, str]]:
    """(group, option) of every YAML preset that extends another option of its own group (experiments:
    see ``test_an_experiment_states_only_what_it_changes``)."""
    found = []
    for path in sorted(p for p in config_dir().glob("*/*.yaml") if p.parent.name != "experiment"):
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults", [])
        if any(isinstance(entry, str) and entry != "_self_" for entry in defaults):
            found.append((path.parent.name, path.stem))
    return found


def leaves(node: dict, prefix: str = "") -> dict[str, object]:
    """``{"encoder.hidden": [128, 64], ...}`` of a nested mapping."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.mark.parametrize(("group", "option"), presets())
def test_a_preset_states_only_what_it_changes(group, option):
    """A YAML preset that extends another option (``defaults: [mlp]``) sets no value that option already has."""
    own = yaml.safe_load((config_dir() / group / f"{option}.yaml").read_text())
    base = next(entry for entry in own.pop("defaults") if isinstance(entry, str) and entry != "_self_")
    base_values = leaves(OmegaConf.to_container(train_config([f"{group}={base}"])[group]))
    restated = {key: value for key, value in leaves(own).items() if base_values.get(key) == value}
    assert not restated, f"conf/{group}/{option}.yaml restates what {base} already sets: {restated}"


def test_an_experiment_states_only_what_it_changes():
    """Every value an experiment sets differs from the config its choices of parts give without it."""
    for path in sorted((config_dir() / "experiment").glob("*.yaml")):
        own = yaml.safe_load(path.read_text())
        defaults = own.pop("defaults", [])
        choices = [
            f"{key.split()[-1].lstrip('/')}={value}"
            for entry in defaults
            if isinstance(entry, dict)
            for key, value in entry.items()
        ]
        parents = [f"experiment={e}" for e in defaults if isinstance(e, str) and e != "_self_"]
        without = leaves(OmegaConf.to_container(train_config([*parents, *choices])))
        restated = {key: value for key, value in leaves(own).items() if without.get(key) == value}
        assert not restated, f"conf/experiment/{path.name} restates values it does not change: {restated}"


def test_no_yaml_file_shadows_a_generated_config():
    """A YAML file named like a registered class's generated node would silently replace it."""
    for kind in KINDS:
        folder = config_dir() / kind
        shadowing = {p.stem for p in folder.glob("*.yaml")} & set(registry(kind).names()) if folder.is_dir() else set()
        assert not shadowing, f"conf/{kind}/ shadows the generated configs of {sorted(shadowing)}"


#: Libraries a command that only answers from genkit's own code must not import: Lightning (with
#: torchmetrics and torchvision, ~3.5 s here) and W&B are loaded by what trains or evaluates.
HEAVY = ("lightning", "torchmetrics", "wandb")


@pytest.mark.parametrize(
    "code",
    [
        "import genkit",
        "from genkit import DataSpec, Encoder, register_encoder",
        "from genkit.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    ],
)
def test_import_genkit_and_genkit_help_leave_lightning_and_wandb_unimported(code):
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert shown.splitlines()[-1] == "[]", f"{code!r} imported {shown.splitlines()[-1]}"


def test_the_registry_registers_the_built_in_parts_when_first_looked_up():
    probe = "from genkit.registry import registry\nprint(registry('data').names(), registry('model').names())"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "'digits'" in shown and "['vae']" in shown


def test_the_lazy_public_names_are_the_ones_type_checkers_read():
    """``genkit.PUBLIC`` (imported on first use) and the ``TYPE_CHECKING`` imports (what editors and the
    API reference see) name the same objects from the same modules."""
    import genkit

    tree = ast.parse((SOURCE / "__init__.py").read_text())
    declared = {
        alias.name: node.module
        for block in tree.body
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert declared == genkit.PUBLIC
    assert all(getattr(genkit, name) is not None for name in genkit.PUBLIC)
