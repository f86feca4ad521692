"""The import structure of ssah/: layers import only downward, and no module imports itself
back through a circle. Lazy imports inside functions count too (they are still arrows)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ssah"

# Lowest first. A module may import from its own layer or any layer below, never above.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "io", "metrics", "stats", "tables", "threads", "quiet", "procs", "results",
     "slurmstate"),
    ("units", "models", "data", "tracking", "checkpointing", "fsdp"),
    ("module", "training", "eval", "scoring"),
    ("freeze", "analysis", "reporting", "finetune"),
    ("worlds", "standin", "resolvers", "schema", "sweep", "localsweep", "config", "defence",
     "stagecall"),
    ("cli",),
    ("train", "score", "prune", "evaluate", "probe", "transfer", "report", "toy", "bench", "judge"),
    ("plan",),
]  # fmt: skip


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its top-level name {top!r} is in no layer of LAYERS")


def imports(path: Path) -> set[str]:
    """ssah modules that `path` imports (absolute and relative, anywhere in the file)."""
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ssah")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + [base])
                base = base.rstrip(".")
            if not base.startswith("ssah"):
                continue
            for a in node.names:  # `from ssah.freeze import masks` names a module
                sub = f"{base}.{a.name}"
                out.add(sub if _exists(sub) else base)
    return {m for m in out if m != me and m != "ssah"}


def _exists(module: str) -> bool:
    p = PKG.parent.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PKG.rglob("*.py"))}


def test_every_module_has_a_layer():
    for mod in graph():
        if mod != "ssah":
            layer_of(mod)


def test_imports_only_go_down():
    up = []
    for mod, deps in graph().items():
        if mod == "ssah":
            continue
        for dep in deps:
            if layer_of(dep) > layer_of(mod):
                up.append(f"{mod} (layer {layer_of(mod)}) -> {dep} (layer {layer_of(dep)})")
    assert not up, "imports that climb a layer:\n" + "\n".join(sorted(up))


def test_no_import_circles():
    g = graph()
    # a package's __init__ re-exporting its own modules is not a circle of meaning
    edges = {
        m: {d for d in ds if not (m.startswith(d + ".") and _is_pkg(d))} for m, ds in g.items()
    }
    cycles = _cycles(edges)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _is_pkg(module: str) -> bool:
    return (PKG.parent.joinpath(*module.split(".")) / "__init__.py").is_file()


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_a_climb_and_a_circle(tmp_path):
    """The rule can fail: an upward arrow and a two-module circle are both found."""
    assert layer_of("ssah.train") > layer_of("ssah.models")
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_threads_are_set_and_the_machine_described_in_one_place() -> None:
    """torch/OMP threads are set only by ssah.threads (set_threads, torch_threads), and one
    `machine()` describes the machine, so no tool runs with threads the stage door never saw."""
    setters, machines = [], []
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text()
        if path.name != "threads.py" and "set_num_threads(" in text:
            setters.append(module_name(path))
        machines += [module_name(path)] * text.count("\ndef machine(")
    assert setters == [] and machines == ["ssah.threads"]
