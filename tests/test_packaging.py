"""Packaging: what pyproject.toml declares agrees with what the pins need, what the notebooks import, the
floors that were tested, the licence, the citation file, environment.yml and the Makefile."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
BUILD = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
DEPENDENCIES = [Requirement(r) for r in PROJECT["dependencies"]]
EXTRAS = {name: [Requirement(r) for r in reqs] for name, reqs in PROJECT["optional-dependencies"].items()}
NOT_TESTED_FLOORS = {"torch"}  # Colab's CUDA build; no CPU wheel of it here (see .ci/floors.txt)


def floor(requirement: Requirement) -> Version | None:
    floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return max(floors) if floors else None


def test_requires_python_is_what_the_pinned_libraries_need():
    ours = SpecifierSet(PROJECT["requires-python"])
    assert "3.11" in ours and "3.10" not in ours
    needs = {}
    for requirement in [*DEPENDENCIES, *EXTRAS["learn"]]:
        spec = metadata.metadata(requirement.name).get("Requires-Python")
        if spec:
            needs[requirement.name] = SpecifierSet(spec)
    assert {"transformers", "trl", "accelerate"} <= needs.keys()
    for name, spec in needs.items():
        assert "3.11" in spec, (name, spec)  # our lowest Python is one they accept
    assert any("3.10" not in spec for spec in needs.values())  # and 3.10 would not do: the floor is needed


def test_no_upper_caps_a_hosted_runtime_could_outgrow():
    for requirement in [*DEPENDENCIES, *EXTRAS["learn"]]:
        if requirement.name == "trl":  # pinned on purpose: trl.experimental can change in any release
            assert str(requirement.specifier) == "==1.16.*"
            continue
        capped = [s for s in requirement.specifier if s.operator in ("<", "<=", "==", "~=")]
        assert not capped, f"{requirement} caps a version; cap only what is known to break, with a comment"
    (torch,) = [r for r in DEPENDENCIES if r.name == "torch"]
    assert "2.11.0" in torch.specifier and "3.0" in torch.specifier  # Colab's 2.11 and any later torch


def test_licence_is_an_spdx_string_with_the_apache_text():
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    assert floor(Requirement(BUILD["requires"][0])) >= Version("77")  # setuptools' PEP 639 support
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "Apache-2.0" in (REPO / "data" / "README.md").read_text()  # the data card says the same


def notebook_imports() -> set[str]:
    modules = set()
    for path in sorted(REPO.glob("notebooks/**/*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            source = "\n".join(
                line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
            )
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    modules.add(node.module.split(".")[0])
    return modules


def test_a_learner_install_covers_every_import_of_the_notebooks():
    declared = {r.name.lower() for r in [*DEPENDENCIES, *EXTRAS["learn"]]}
    learner = set(declared)  # what they bring along too (IPython comes with ipywidgets)
    for name in declared:
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                learner.add(requirement.name.lower())
    providers = metadata.packages_distributions()
    imported = notebook_imports() - set(sys.stdlib_module_names) - {"simplepo_helpers", "google"}
    assert {"torch", "trl"} <= imported
    missing = {}
    for module in sorted(imported):
        distributions = {d.lower() for d in providers.get(module, [module])}
        if not distributions & learner:
            missing[module] = distributions
    assert not missing, f"notebooks import these, but `pip install .[learn]` does not provide them: {missing}"


def test_extras_split_learner_and_developer_tooling():
    learn = {r.name for r in EXTRAS["learn"]}
    dev = {r.name for r in EXTRAS["dev"]}
    assert "trl" in learn and "simplepo-helpers" in dev  # dev = learn + tools
    assert [str(r) for r in EXTRAS["dev"] if r.name == "simplepo-helpers"] == ["simplepo-helpers[learn]"]
    for tool in ("playwright", "papermill", "pytest", "ruff", "nbval"):
        assert tool not in learn and tool not in {r.name for r in DEPENDENCIES}
    assert {r.name for r in EXTRAS["browser"]} == {"playwright"}
    assert {"pytest", "nbval", "ruff", "nbstripout"} <= dev


def test_every_declared_floor_is_pinned_in_the_floors_file():
    pins = {}
    for line in (REPO / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.lower()] = Version(version)
    for requirement in [*DEPENDENCIES, *EXTRAS["learn"]]:
        if requirement.name in NOT_TESTED_FLOORS:
            continue
        expected = floor(requirement) or Version(
            str(requirement.specifier).removeprefix("==").removesuffix(".*")
        )
        assert requirement.name.lower() in pins, f"{requirement.name}'s floor is not in .ci/floors.txt"
        assert pins[requirement.name.lower()] == expected, (requirement, pins[requirement.name.lower()])


def test_citation_file_cites_the_kit_and_the_simpo_paper():
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert {"message", "title", "authors"} <= citation.keys()
    assert citation["version"] == PROJECT["version"] and citation["license"] == PROJECT["license"]
    repository = tomllib.loads((REPO / "colab.toml").read_text())["repository"]
    assert citation["repository-code"] == f"https://github.com/{repository}"
    (simpo,) = [r for r in citation["references"] if r["title"].startswith("SimPO")]
    assert [a["family-names"] for a in simpo["authors"]] == ["Meng", "Xia", "Chen"]
    assert simpo["year"] == 2024 and "2405.14734" in simpo["url"]


def test_environment_yml_and_makefile_install_the_same_cpu_torch():
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    python = next(d for d in environment["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python.removeprefix("python=") in SpecifierSet(PROJECT["requires-python"])
    pip = next(d for d in environment["dependencies"] if isinstance(d, dict))["pip"]
    makefile = (REPO / "Makefile").read_text()
    torch_pin = re.search(r"^TORCH \?= (\S+)$", makefile, re.M).group(1)
    index = re.search(r"^TORCH_CPU_INDEX := (\S+)$", makefile, re.M).group(1)
    assert index == "https://download.pytorch.org/whl/cpu"
    assert re.search(r"^TORCH_INDEX \?= .*TORCH_CPU_INDEX", makefile, re.M)  # used when reachable
    assert f"--extra-index-url {index}" in pip and torch_pin in pip and "-e .[dev]" in pip
    (torch,) = [r for r in DEPENDENCIES if r.name == "torch"]
    assert Version(torch_pin.removeprefix("torch==")) in torch.specifier


def test_readme_starts_with_the_two_commands_and_says_how_to_get_cpu_torch():
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == [
        "make run",
        "make test",
    ]
    assert "https://download.pytorch.org/whl/cpu" in readme and "TORCH_INDEX" in readme
    for path in ("colab.toml", "docs/next_steps.md", "environment.yml"):
        assert path in readme


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_wheel_carries_the_spdx_licence_and_the_extras(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "License classifiers are deprecated" not in done.stderr and "license" not in done.stderr.lower()
    (wheel,) = tmp_path.glob("simplepo_helpers-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (meta_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        meta = archive.read(meta_name).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
    assert "License-Expression: Apache-2.0" in meta
    assert "Requires-Python: >=3.11" in meta
    assert {"learn", "dev", "browser"} <= set(re.findall(r"^Provides-Extra: (\S+)$", meta, re.M))


def _type_checking_imports(init: Path) -> dict[str, str]:
    """name -> module of every import in ``__init__.py``'s ``if TYPE_CHECKING:`` block."""
    found = {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.level == 1
                found.update({alias.name: statement.module for alias in statement.names})
    return found


def test_one_export_list_the_type_checking_block_agrees_with_it():
    import simplepo_helpers

    init = REPO / "simplepo_helpers" / "__init__.py"
    assert _type_checking_imports(init) == simplepo_helpers._EXPORTS
    assert simplepo_helpers.__all__ == sorted(simplepo_helpers._EXPORTS)
    for name in simplepo_helpers.__all__:
        assert getattr(simplepo_helpers, name) is not None


def test_every_top_level_name_is_used_by_a_notebook_or_a_doc():
    """A name only tests or internals use is imported from its module, not re-exported at the top."""
    import simplepo_helpers

    texts = [
        "".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"])
        for path in (REPO / "notebooks").rglob("*.ipynb")
    ]
    texts += [path.read_text() for path in [REPO / "README.md", *(REPO / "docs").glob("*.md")]]
    unused = [
        name
        for name in simplepo_helpers.__all__
        if not any(re.search(rf"\b{re.escape(name)}\b", text) for text in texts)
    ]
    assert unused == []
