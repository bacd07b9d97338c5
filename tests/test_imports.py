"""Imports run one way: a module of abcgen imports only modules before it in the order data
flows (the README's module map), wherever the import stands (at the top or inside a
function). Imports made for the type checker alone (`if TYPE_CHECKING:`) do not count."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "abcgen"

ORDER = [
    # shared services
    "errors",
    "files",
    "abc",
    "form",
    "structure",
    "options",
    "device",
    "scoring",
    # the pipeline
    "download",
    "corpus",
    "vocab",
    "model_config",
    "model",
    "checkpoint",
    "inference",
    "finetune",
    "distributed",
    "train",
    "shaping",
    "watch",
    "prime",
    "sample",
    "export",
    "abctools",
    "evaluate",
    "experiment",
    "serve",
    "cli",
    "__main__",
]
# distributed's launcher runs train in every process: the one import that points back
POINTS_BACK = {("distributed", "train")}


def runtime_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, abcgen module) of every import outside `if TYPE_CHECKING:` blocks."""
    found, skipped = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            skipped |= {id(inner) for inner in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("abcgen."):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("abcgen.")]
    return found


def stage(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def test_every_module_has_a_place_in_the_order():
    modules = {stage(path) for path in PACKAGE.rglob("*.py") if "node_modules" not in path.parts}
    assert modules - {"__init__"} == set(ORDER)


def test_no_module_imports_a_later_stage():
    rank = {name: i for i, name in enumerate(ORDER)}
    backwards = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = stage(path)
        if "node_modules" in path.parts or me == "__init__":
            continue
        for line, module in runtime_imports(ast.parse(path.read_text())):
            target = module.split(".")[1]
            if target != me and rank[target] > rank[me] and (me, target) not in POINTS_BACK:
                backwards.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not backwards, "\n".join(backwards)


def test_the_check_sees_type_checking_blocks_and_function_imports():
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from abcgen.cli import cli\n"
    source += "def later():\n    from abcgen.sample import load_model\n"
    assert runtime_imports(ast.parse(source)) == [(5, "abcgen.sample")]
