"""The documentation site builds with `mkdocs build --strict`, its API
reference shows the docstrings, and the README points to it."""

import inspect
import os
import pathlib
import re
import subprocess
import sys

import pytest

import keras_bridge as kb

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """The site, built once with warnings as errors."""
    folder = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"]
        + ["--site-dir", str(folder)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return folder


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_api_reference_shows_the_bridge_ensemble_docstring(site):
    page = (site / "api" / "ensemble" / "index.html").read_text()
    summary = inspect.getdoc(kb.BridgeEnsemble).splitlines()[0]
    assert summary in _text(page)


def test_api_reference_lists_every_public_method_of_the_ensemble(site):
    page = (site / "api" / "ensemble" / "index.html").read_text()
    public = [
        name
        for name, member in inspect.getmembers(kb.BridgeEnsemble)
        if not name.startswith("_") and member.__doc__
    ]
    missing = [
        name
        for name in public
        if f'id="keras_bridge.BridgeEnsemble.{name}"' not in page
    ]
    assert not missing, f"add to docs/api/ensemble.md: {missing}"


def test_docstring_examples_render_as_code(site):
    page = (site / "api" / "curves" / "index.html").read_text()
    assert "&gt;&gt;&gt;" in page and "<blockquote>" not in page


def test_every_page_is_in_the_navigation(site):
    pages = {
        path.relative_to(ROOT / "docs").as_posix()
        for path in (ROOT / "docs").rglob("*.md")
    }
    config = (ROOT / "mkdocs.yml").read_text()
    assert not [page for page in pages if f" {page}\n" not in config]


def _blocks(path, language) -> list:
    text = (ROOT / path).read_text()
    return re.findall(rf"```{language}\n(.+?)\n```", text, re.S)


def test_home_and_quickstart_show_what_the_readme_shows():
    readme_code = re.findall(
        r"## In one screen\n\n```python\n(.+?)\n```",
        (ROOT / "README.md").read_text(),
        re.S,
    )
    assert _blocks("docs/quickstart.md", "python")[:1] == readme_code
    setup = _blocks("README.md", "bash")[:2]
    assert _blocks("docs/index.md", "bash")[:2] == setup


def test_readme_links_to_the_docs_and_says_how_to_build_them():
    text = (ROOT / "README.md").read_text()
    assert "(docs/index.md)" in text
    assert "mkdocs serve" in text and '".[docs]"' in text
