"""The package's structure, read with `ast`: no module reaches into
another object's private names, private third-party internals stay in
`keras_bridge.compat`, and the modules import one another without a
cycle."""

import ast
import inspect
import pathlib

import keras_bridge

PACKAGE = pathlib.Path(keras_bridge.__file__).parent
#: The one module allowed to use private Keras / TensorFlow / KerasTuner
#: internals.
COMPAT = PACKAGE / "compat.py"
#: Private third-party packages (imported only by `keras_bridge.compat`).
PRIVATE_PACKAGES = ("keras.src", "tensorflow.python", "keras_tuner.src")
#: ``getattr``-like builtins whose second argument names an attribute.
ATTRIBUTE_FUNCTIONS = ("getattr", "setattr", "hasattr", "delattr")


def _modules() -> dict:
    """``{dotted name: (path, tree)}`` of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = (path, ast.parse(path.read_text()))
    return found


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (
        name.startswith("__") and name.endswith("__")
    )


def _on_self(node) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _private_uses(tree) -> list:
    """``(line, source)`` of each private name used on another object
    than ``self`` / ``cls``, and of each ``from x import _name``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if _is_private(node.attr) and not _on_self(node.value):
                found.append((node.lineno, ast.unparse(node)))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ATTRIBUTE_FUNCTIONS
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
            and not _on_self(node.args[0])
        ):
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if _is_private(alias.name):
                    found.append((node.lineno, ast.unparse(node)))
    return found


def _imported(node) -> list:
    """The module names an import statement names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return []


def test_no_module_uses_another_objects_private_names():
    uses = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {source}"
        for path, tree in _modules().values()
        if path != COMPAT
        for line, source in _private_uses(tree)
    ]
    assert not uses, (
        "Only `self` / `cls` may read or write an underscore name (give the "
        "owner a public method, or move a third-party internal into "
        "keras_bridge/compat.py):\n" + "\n".join(uses)
    )


def test_private_third_party_modules_are_imported_by_compat_only():
    imports = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}"
        for path, tree in _modules().values()
        if path != COMPAT
        for node in ast.walk(tree)
        if any(
            name == package or name.startswith(f"{package}.")
            for name in _imported(node)
            for package in PRIVATE_PACKAGES
        )
    ]
    assert not imports, (
        "Private Keras / TensorFlow / KerasTuner modules belong in "
        "keras_bridge/compat.py:\n" + "\n".join(imports)
    )


def _function_imports(tree) -> set:
    """The import statements inside functions."""
    return {
        inner
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for inner in ast.walk(node)
        if isinstance(inner, (ast.Import, ast.ImportFrom))
    }


def _graph(modules, with_function_imports) -> dict:
    """``{module: modules of the package it imports}``."""
    graph = {}
    for name, (_, tree) in modules.items():
        inside = _function_imports(tree)
        graph[name] = {
            target
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            and (with_function_imports or node not in inside)
            for target in _imported(node)
            if target in modules
            and target != name
            and target != "keras_bridge"  # a submodule's parent package
        }
    return graph


def _cycle(graph) -> list:
    """One import cycle of ``graph`` as a list of modules, or []."""
    state, stack = {}, []

    def visit(node):
        state[node], _ = "open", stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node], _ = "done", stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_package_has_no_import_cycle():
    modules = _modules()
    for with_function_imports in (False, True):
        cycle = _cycle(_graph(modules, with_function_imports))
        assert not cycle, (
            "Import cycle"
            + (" (counting imports inside functions)" * with_function_imports)
            + ": "
            + " -> ".join(cycle)
        )


def test_imports_inside_functions_say_why():
    undocumented = []
    for name, (path, tree) in _modules().items():
        lines = path.read_text().splitlines()
        docstring = ast.get_docstring(tree) or ""
        for node in _function_imports(tree):
            if not any(t.startswith("keras_bridge") for t in _imported(node)):
                continue
            nearby = lines[node.lineno - 2 : node.lineno]
            if "at the top" in docstring or any("#" in x for x in nearby):
                continue
            undocumented.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert not undocumented, (
        "An import of the package inside a function needs a comment (or "
        "the module's docstring) saying why it is not at the top:\n"
        + "\n".join(undocumented)
    )


def test_the_checks_catch_what_they_look_for():
    source = (
        "from keras.src import backend\n"
        "from keras_bridge.ensemble import _helper\n"
        "def f(ens, self):\n"
        "    ens._points = {}\n"
        "    getattr(ens, '_data')\n"
        "    return self._data, ens.__class__\n"
    )
    uses = [line for line, _ in _private_uses(ast.parse(source))]
    assert sorted(uses) == [2, 4, 5]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_the_facade_implements_what_its_mixins_declare():
    from keras_bridge.ensemble import BridgeEnsemble
    from keras_bridge.ensemble_fit import FitMixin
    from keras_bridge.ensemble_reports import ReportsMixin
    from keras_bridge.ensemble_saving import SavingMixin

    declared = {
        (mixin.__name__, name)
        for mixin in (FitMixin, ReportsMixin, SavingMixin)
        for name, member in vars(mixin).items()
        if callable(member)
        and "raise NotImplementedError" in inspect.getsource(member)
    }
    assert {name for _, name in declared} >= {"_adopt", "_data"}
    missing = [
        f"{mixin}.{name}"
        for mixin, name in sorted(declared)
        if name not in vars(BridgeEnsemble)
    ]
    assert not missing, f"BridgeEnsemble must implement: {missing}"
