"""The architecture as a test: stages import the library, the library never imports a stage, each layer
imports only the layers below it, and nothing imports in a cycle (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "bayes_beats"
# each library layer and what it may import (besides itself); stages and the CLI sit above all of them
LAYERS = {
    "core": set(),
    "music": {"core"},
    "data": {"core", "music"},
    "model": {"core", "music"},
    "api": {"core", "music", "model"},
}
ENTRY_POINTS = {"bayes_beats", "bayes_beats.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """Project modules a file imports, anywhere in it; `from pkg import mod` resolves to the module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bayes_beats":
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: project_imports(path, set(files)) - {name} for name, path in files.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def stages() -> set[str]:
    return set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


def test_every_top_level_module_is_a_stage_and_every_stage_a_module():
    top = {p.stem for p in SRC.glob("*.py")} - {"__init__", "cli"}
    assert top == stages(), "src/bayes_beats/*.py are the dvc stages, one module each; library code lives in a layer"


def test_library_never_imports_a_stage_and_layers_point_down():
    problems = []
    for module, imports in graph().items():
        own = layer(module)
        if own is None:
            continue
        for target in imports:
            target_layer = layer(target)
            if target_layer is None:
                problems.append(f"{module} (library) imports {target}, which is a stage or an entry point")
            elif target_layer != own and target_layer not in LAYERS[own]:
                problems.append(f"{module} ({own}) imports {target} ({target_layer}): {own} may use {LAYERS[own]}")
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            # the package root re-exports for diffusers/MLflow; importing it means importing those modules
            if state.get(nxt) == 1 and nxt not in ENTRY_POINTS:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            raise AssertionError(" → ".join(cycle))


def test_no_source_cites_a_document_missing_from_the_repository():
    cited = {}
    for path in [
        *ROOT.joinpath("src").rglob("*.py"),
        *ROOT.joinpath("serving").glob("*.py"),
        *ROOT.joinpath("bench").glob("*.py"),
    ]:
        for word in path.read_text().replace("(", " ").replace(")", " ").replace(",", " ").split():
            word = word.strip("\"'`.:;")
            if word.endswith(".md") and "/" in word or word in ("DESIGN.md", "STYLE.md"):
                cited.setdefault(word, path.relative_to(ROOT))
    missing = {doc: str(src) for doc, src in cited.items() if not (ROOT / doc).is_file()}
    assert not missing, f"cited but not in the repository: {missing}"


def closure(start: set[str], edges: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            # the package root resolves its exports lazily (PEP 562): importing it runs none of them
            todo += [m for m in edges.get(module, ()) if m != "bayes_beats"]
    return seen


def module_file(module: str) -> str:
    path = SRC.parent.joinpath(*module.split("."))
    return str((path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).relative_to(ROOT))


def test_dvc_deps_cover_the_code_each_stage_runs():
    """Editing a shared helper must rerun every stage that runs it: deps name the layers a stage imports."""
    edges = graph()
    serving = project_imports(ROOT / "serving" / "service.py", set(edges))
    missing = {}
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        deps = [str(d) for d in stage.get("deps", [])]
        roots = {f"bayes_beats.{name}"} | (serving if "serving/service.py" in deps else set())
        files = {module_file(m) for m in closure(roots, edges) if m != "bayes_beats"}
        uncovered = sorted(f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))
        if uncovered:
            missing[name] = uncovered
    assert not missing, f"dvc.yaml deps miss code the stage runs: {missing}"


def test_params_sections_are_stage_names():
    from bayes_beats.core.config import Params

    shared = {"data", "model"}  # read by several stages
    shared |= {
        "listeners",
        "stream",
    }  # read by the service (vote limits, the radio), recorded in the Bento by `package`
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(params) - shared <= stages(), (
        f"params.yaml sections that are not stages: {set(params) - shared - stages()}"
    )
    assert set(Params.model_fields) == set(params)
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        sections = {str(p).split(".")[0] for p in stage.get("params", [])}
        assert sections <= {name} | shared | set(params), (name, sections)


def test_cli_lists_exactly_the_dvc_stages():
    from bayes_beats.cli import STAGES

    assert set(STAGES) == stages()
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        assert stage["cmd"] == f"bayes-beats {name}"


def test_every_workspace_path_is_named_once():
    """data/, models/, metrics/, reports/ and checkpoints/ paths are spelled only in core/paths.py (and params)."""
    import re

    literal = re.compile(r"""["'](data|models|metrics|reports|checkpoints)/[\w./-]*["']""")
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in SRC.rglob("*.py")
        if p.name != "paths.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if literal.search(line) and not line.lstrip().startswith("#")
    ]
    assert not offenders, offenders
    from bayes_beats.core import paths

    declared = {str(v) for v in vars(paths).values() if isinstance(v, Path)}
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = {
        next(iter(o)) if isinstance(o, dict) else o
        for s in dvc.values()
        for key in ("outs", "metrics", "plots")
        for o in s.get(key, [])
    }
    assert outs <= declared, f"dvc.yaml outputs missing from core/paths.py: {outs - declared}"
