from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def requirement_pins():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return sorted(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def test_conda_env_has_the_same_pins_as_requirements():
    env = yaml.safe_load((ROOT / "envs" / "lorasweep.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(pip_section) == requirement_pins()


def test_every_requirement_is_pinned_exactly():
    for pin in requirement_pins():
        assert "==" in pin, f"{pin} is not pinned with =="
    assert "torch==2.13.0" in requirement_pins()
