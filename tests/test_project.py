import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_ci_runs_exactly_the_readme_test_command():
    commands = _readme_commands()
    test_command = [c for c in commands if "pytest" in c][0]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_readme_main_command_runs_the_bundled_job():
    main_command = _readme_commands()[0]
    assert "keras-bridge run" in main_command
    assert "pip install" in main_command
