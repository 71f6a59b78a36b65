"""The package's shape: what ships, what imports what."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "rlkit"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, (ast.Name, ast.Attribute)) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The kit's modules this file imports, anywhere in it (functions too), but for typing-only imports."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block)
            for n in ast.walk(block)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rlkit":
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "rlkit"}
    return (out & modules) - {_module(path)}


def test_the_import_graph_has_no_cycle():
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: _imports(p, set(files)) for m, p in files.items()}
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for d in sorted(graph[m]):
            assert state.get(d) != "open", "import cycle: " + " -> ".join([*path[path.index(d):], d])
            if d not in state:
                visit(d, [*path, d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert "rlkit.config" in graph and graph["rlkit.run"]  # the scan sees the package


def test_the_config_imports_no_training_library():
    code = ("import sys, rlkit.config; print(sorted(m for m in ('torch', 'transformers', 'trl', 'accelerate', "
            "'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_harnesses_are_not_in_the_package():
    shipped = subprocess.run(["git", "ls-files", "rlkit"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert "rlkit/config.py" in shipped
    assert not [f for f in shipped if Path(f).stem in ("bench", "hostile", "hostile_battery")]


def test_loading_every_shipped_experiment_writes_nothing_and_runs_no_plugin(tmp_path):
    code = """
import json, sys
from pathlib import Path
from rlkit.config import load_experiment
from rlkit.sweep import is_sweep_file
files = [f for f in sorted(Path('experiments').rglob('*.yaml')) if 'accelerate' not in f.parts and not is_sweep_file(f)
         and not f.name.startswith('_')]
for f in files:
    load_experiment(f)
plugins = [m for m, mod in sys.modules.items() if str(getattr(mod, '__file__', '') or '').startswith(str(Path('rewards').resolve()))]
heavy = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules]
print(json.dumps({"files": len(files), "plugins": plugins, "heavy": heavy}))
"""
    def files() -> dict:
        skip = {".git", ".venv", "__pycache__", ".pytest_cache"}
        return {p: p.stat().st_mtime_ns for p in ROOT.rglob("*") if not skip & set(p.parts) and p.is_file()}

    before = files()
    out = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                    check=True).stdout)
    assert out["files"] >= 15 and out["plugins"] == [] and out["heavy"] == [], out
    after = files()
    assert {p for p in after if p not in before or after[p] != before[p]} == set()  # validation wrote nothing
