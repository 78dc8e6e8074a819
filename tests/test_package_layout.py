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
                 if not name.startswith(("vqtok.training", "vqtok.commands")) and name != "vqtok"
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


def type_name(model_type: str) -> str:
    """The one name of a tokenizer type across the tree: `vqtok-vmf-sqvae` -> `vmf_sqvae`."""
    return model_type.removeprefix("vqtok-").replace("-", "_")


def test_every_type_is_found_from_one_name():
    """A type's config and model (`vqtok/models/<name>.py`), its quantizer (`vqtok/quantizers/<name>.py`),
    its training YAML (`training/configs/<name>.yaml`) and its tests (`tests/test_<name>.py`)."""
    import yaml

    from test_contract import SHIPPED_TYPES
    from vqtok.auto import registered_config_class, registered_model_class

    assert len(SHIPPED_TYPES) >= 7
    for model_type in SHIPPED_TYPES:
        name = type_name(model_type)
        config_class, model_class = registered_config_class(model_type), registered_model_class(model_type)
        assert config_class.__module__ == model_class.__module__ == f"vqtok.models.{name}", model_type
        assert config_class.quantizer_class.__module__ == f"vqtok.quantizers.{name}", model_type
        for path in (PACKAGE / "models" / f"{name}.py", PACKAGE / "quantizers" / f"{name}.py",
                     REPO / "training" / "configs" / f"{name}.yaml", REPO / "tests" / f"test_{name}.py"):
            assert path.is_file(), f"{model_type}: no {path.relative_to(REPO)}"
        run = yaml.safe_load((REPO / "training" / "configs" / f"{name}.yaml").read_text())
        assert run["model"]["model_type"] == model_type


def test_the_top_level_reads_like_the_data_flow():
    """Options and checks, the pixel pipeline, the config, the model base and the auto class sit at
    the top; everything else (data first) is in a room of its own."""
    loose = {path.stem for path in PACKAGE.glob("*.py")}
    assert loose == {"__init__", "__main__", "options", "validation", "processing", "configuration", "modeling", "auto"}
    rooms = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert rooms == {"data", "backbones", "quantizers", "models", "regularizers", "losses", "hub", "parallel",
                     "tokens", "multimodal", "prior", "training", "conversion", "metrics", "commands"}


def test_importing_vqtok_imports_neither_giotto_ph_nor_geoopt():
    """They load when a HyperVQ quantizer or the topology regulariser first computes."""
    import subprocess
    import sys

    code = ("import sys, vqtok; from vqtok import HyperVQConfig, VQTokenizer; "
            "VQTokenizer.from_config(HyperVQConfig(image_size=8, latent_dim=4, codebook_size=8)); "
            "print(sorted(m for m in ('gph', 'geoopt') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip().splitlines()[-1] == "[]"
