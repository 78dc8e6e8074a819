"""The package layout keeps its promises: every subpackage ships in the wheel, model code never
imports training code, quantizers are pure torch, and no two modules import each other in a circle."""

import ast
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vqtok"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of everything a module imports (relative imports resolved; `from x import y`
    counts as importing `x` and `x.y`), also inside functions and `if TYPE_CHECKING:` blocks."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def test_every_subpackage_is_listed_for_the_wheel():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {module_name(path) for path in PACKAGE.rglob("__init__.py")}
    assert on_disk <= listed, f"subpackages missing from pyproject.toml: {sorted(on_disk - listed)}"


def test_model_code_never_imports_training_code():
    offenders = {name for name, imported in MODULES.items()
                 if not name.startswith("vqtok.training") and name != "vqtok"
                 and any(target.startswith("vqtok.training") for target in imported)}
    assert not offenders, f"model-side modules importing vqtok.training: {sorted(offenders)}"


def test_quantizers_are_pure_torch():
    offenders = {name for name, imported in MODULES.items() if name.startswith("vqtok.quantizers")
                 and any(target.split(".")[0] in ("transformers", "accelerate", "datasets", "huggingface_hub")
                         for target in imported)}
    assert not offenders, f"quantizer modules importing Hugging Face libraries: {sorted(offenders)}"


def test_no_import_circles():
    edges = {
        name: {target for target in imported if target in MODULES and target != name
               # a module importing its own package's __init__ (as `from . import x` does) is no circle
               and not name.startswith(target + ".")}
        for name, imported in MODULES.items()
    }
    circles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not circles, "import circles: " + "; ".join(" -> ".join(circle) for circle in circles)
