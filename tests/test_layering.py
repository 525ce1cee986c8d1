"""The layering of the packages, read from the source's imports (every ``import``, also inside functions).

- ``probe`` (the model library) imports nothing of ``ablations``, ``app`` or ``reports``, except its CLI
  module ``probe/run.py``;
- inside ``ablations`` the sub-packages are ordered; a lower one never imports a higher one, so there is no
  import circle (checked on the module graph too);
- library code never imports a CLI module (``python -m`` entry points); ``app`` and ``reports`` import library
  functions only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("probe", "ablations", "app", "reports")

#: ``python -m`` entry points and the argument helpers only they use.
CLI_MODULES = {
    "probe.run",
    "ablations.cliargs",
    *(
        f"ablations.{verb}"
        for verb in ("run", "evaluate", "sweep", "search", "export", "retrain", "compare", "train", "paper")
    ),
}

#: The order of ``ablations``' parts: each may import only from parts of a lower or equal rank.
ABLATIONS_RANK = {
    "ablations.paths": 0,
    "ablations.results": 0,
    "ablations.settings": 0,
    "ablations.data": 1,
    "ablations.evaluation": 2,
    "ablations.masking": 3,
    "ablations.mice": 4,
    "ablations.scorers": 5,
    "ablations.training": 6,
    "ablations.experiments": 7,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every project module ``path`` imports (``from a.b import c`` counts as ``a.b`` and ``a.b.c``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return {m for m in out if m.split(".")[0] in PACKAGES}


def project_graph(root: Path = ROOT) -> nx.DiGraph:
    """Module → imported module, over the project's packages (names that are modules or packages only)."""
    files = {module_name(p): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        for target in imports_of(path):
            if target in files and target != name:
                graph.add_edge(name, target)
    return graph


def rank(module: str) -> int | None:
    for prefix, r in ABLATIONS_RANK.items():
        if module == prefix or module.startswith(prefix + "."):
            return r
    return None


def violations(graph: nx.DiGraph) -> list[str]:
    problems = []
    for src, dst in graph.edges:
        top_src, top_dst = src.split(".")[0], dst.split(".")[0]
        if top_src == "probe" and src not in CLI_MODULES and top_dst != "probe":
            problems.append(f"{src} (model library) imports {dst}")
        if dst in CLI_MODULES and src not in CLI_MODULES:
            problems.append(f"{src} (library, app or report) imports the CLI module {dst}")
        if top_src == "ablations" and top_dst in ("app", "reports"):
            problems.append(f"{src} imports {dst}, a package above it")
        rs, rd = rank(src), rank(dst)
        if rs is not None and rd is not None and rd > rs:
            problems.append(f"{src} (rank {rs}) imports {dst} (rank {rd}), a higher part of ablations")
    return problems


def test_layers_are_respected():
    assert violations(project_graph()) == []


def test_no_import_circle():
    graph = project_graph()
    ablations = graph.subgraph([n for n in graph if n.startswith("ablations")])
    packages = [n for n in ablations if (ROOT / Path(*n.split("."))).is_dir()]
    # a package's __init__ importing its own modules is the package face, not a circle
    modules = ablations.copy()
    modules.remove_nodes_from(packages)
    assert list(nx.simple_cycles(modules)) == []


def test_every_library_module_is_in_a_ranked_part():
    """A new top-level ablations module must be placed in the order above (or be a CLI)."""
    graph = project_graph()
    unranked = sorted(
        n for n in graph if n.startswith("ablations.") and rank(n) is None and n not in CLI_MODULES
    )
    assert unranked == []


@pytest.mark.parametrize(
    "edge, expected",
    [
        (("probe.model", "ablations.results"), "model library"),
        (("ablations.data.collections", "ablations.mice.model"), "higher part"),
        (("reports.sections", "ablations.sweep"), "CLI module"),
    ],
)
def test_the_checks_catch_a_reintroduced_violation(edge, expected):
    graph = project_graph()
    graph.add_edge(*edge)
    assert any(expected in v for v in violations(graph))


def test_the_cycle_check_catches_a_circle():
    graph = project_graph()
    graph.add_edge("ablations.evaluation.measures", "ablations.experiments.runner")
    modules = graph.subgraph(
        [n for n in graph if n.startswith("ablations.") and "." in n[len("ablations.") :]]
    )
    assert list(nx.simple_cycles(modules))
