"""The README's two commands are what a fresh machine and CI run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bash_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [block.strip() for block in re.findall(r"^```bash\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def test_readme_has_exactly_two_setup_commands_one_for_the_main_job_and_one_for_the_tests():
    commands = bash_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    for command in commands:
        assert "\n" not in command, "each set-up command is a single line"
        assert command.index("pip install torch==2.13.0") < command.index("pip install -e"), "torch (CPU build) first"
    assert main_job.endswith("python examples/train.py")
    assert tests.endswith("python -m pytest -q tests")


def test_ci_runs_the_readme_test_command_after_installing_torch_first():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = bash_commands()[1].split("&& ")[-1]
    assert test_command in ci
    assert ci.index("pip install --quiet torch==2.13.0") < ci.index('pip install --quiet -e ".[test]"') < ci.index(test_command)
