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
    assert "trl" in learn and "simplepo-helpers" in dev  # dev = learn + notebook + tools
    (self_reference,) = [r for r in EXTRAS["dev"] if r.name == "simplepo-helpers"]
    assert self_reference.extras == {"learn", "notebook"}
    for tool in ("playwright", "papermill", "pytest", "ruff", "nbval"):
        assert tool not in learn and tool not in {r.name for r in DEPENDENCIES}
    assert {r.name for r in EXTRAS["browser"]} == {"playwright"}
    assert {"pytest", "nbval", "ruff", "nbstripout"} <= dev


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_closure(requirements) -> set[str]:
    """Every distribution that installing ``requirements`` brings (from this environment's metadata)."""
    seen, todo = set(), [Requirement(str(r)) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = _normal(requirement.name)
        if name in seen or name == "simplepo-helpers":
            continue
        seen.add(name)
        try:
            lines = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in lines:
            child = Requirement(line)
            extras = requirement.extras or {""}
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras):
                todo.append(child)
    return seen


def test_the_notebook_extra_opens_notebooks_locally_and_learn_leaves_colabs_jupyter_alone():
    """learn is what Colab installs: it must not bring a Jupyter front end or kernel that would replace
    Colab's; the notebook extra brings JupyterLab, the python3 kernel and nbclient (simplepo-run-notebooks)."""
    notebook = {_normal(r.name) for r in EXTRAS["notebook"]}
    assert {"jupyterlab", "ipykernel", "nbclient"} <= notebook
    learner = install_closure([*DEPENDENCIES, *EXTRAS["learn"]])
    jupyter_stack = {"jupyterlab", "notebook", "ipykernel", "jupyter-server", "jupyter-client", "nbclient"}
    assert not learner & jupyter_stack, f"the learn install pulls {learner & jupyter_stack}"
    readme = (REPO / "README.md").read_text()
    assert 'pip install -e ".[learn,notebook]"' in readme and "jupyter lab" in readme


def test_project_urls_point_at_the_repository_colab_toml_names():
    repository = tomllib.loads((REPO / "colab.toml").read_text())["repository"]
    urls = PROJECT["urls"]
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues"}
    base = f"https://github.com/{repository}"
    assert urls["Homepage"] == urls["Source"] == base and urls["Issues"] == f"{base}/issues"
    assert urls["Documentation"].startswith(f"{base}/")


# what only an extra (or the Jupyter stack the notebook extra brings) provides: a console script must work
# without it, or say which extra to add
JUPYTER_STACK = {"nbformat", "jupyter-client", "jupyter-server", "notebook"}


def _extra_only_modules() -> set[str]:
    base = install_closure(DEPENDENCIES)
    extra = {_normal(r.name) for reqs in EXTRAS.values() for r in reqs} | JUPYTER_STACK
    extra -= base | {"simplepo-helpers"}
    return {
        module
        for module, dists in metadata.packages_distributions().items()
        if any(_normal(d) in extra for d in dists) and not any(_normal(d) in base for d in dists)
    }


def run_without_extras(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where those modules are missing (None in sys.modules: imports
    fail with ModuleNotFoundError and importlib.util.find_spec answers None, as when not installed)."""
    blocker = f"import sys\nsys.modules.update(dict.fromkeys({sorted(_extra_only_modules())!r}))\n"
    return subprocess.run(
        [sys.executable, "-c", blocker + code], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def test_every_console_script_works_with_the_base_install_or_names_its_extra(tmp_path):
    modules = _extra_only_modules()
    assert {"trl", "nbclient", "jupyterlab", "ipykernel", "pytest"} <= modules
    assert not {"torch", "transformers", "ipywidgets", "yaml"} & modules
    scripts = PROJECT["scripts"]
    assert set(scripts) == {"simplepo-train", "simplepo-run-notebooks"}
    # simplepo-train: the base install is enough (no TRL, TensorBoard or Jupyter on its path)
    done = run_without_extras(
        "from simplepo_helpers.scale.cli import main\nsys.argv = ['simplepo-train', '--help']\nmain()\n"
    )
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr[-2000:]
    # its one optional tracker that the learn extra brings: refused in one line that says what to install
    done = run_without_extras(
        "from simplepo_helpers.scale.cli import main\n"
        "raise SystemExit(main(['--config', 'configs/tiny_world_cpu.yaml', 'log.report_to=tensorboard']))\n"
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith("needs the tensorboard package: pip install tensorboard")
    )
    # simplepo-run-notebooks: one line naming the notebook extra, exit 2 (no traceback)
    notebook = tmp_path / "x.ipynb"
    notebook.write_text("{}")
    done = run_without_extras(
        "from simplepo_helpers.course.run_notebooks import main\n"
        f"raise SystemExit(main([{str(notebook)!r}]))\n"
    )
    assert done.returncode == 2 and done.stdout == "", done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "simplepo-run-notebooks needs the notebook extra (nbclient and the ipykernel kernel): pip install "
        '"simplepo-helpers[notebook]" (in a clone: pip install -e ".[notebook]")'
    ]
    module, function = scripts["simplepo-run-notebooks"].split(":")
    assert (module, function) == ("simplepo_helpers.course.run_notebooks", "main")


def test_run_notebooks_names_the_extra_when_nbclient_or_the_kernel_is_missing(monkeypatch, tmp_path, capsys):
    from simplepo_helpers.course import run_notebooks

    notebook = tmp_path / "x.ipynb"
    notebook.write_text("{}")
    monkeypatch.setattr(run_notebooks, "_MISSING", ModuleNotFoundError("No module named 'nbclient'"))
    assert run_notebooks.main([str(notebook)]) == 2
    assert capsys.readouterr().err == run_notebooks.NEEDS_EXTRA + "\n"
    monkeypatch.setattr(run_notebooks, "_MISSING", None)
    real_find_spec = run_notebooks.importlib.util.find_spec
    monkeypatch.setattr(
        run_notebooks.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ipykernel" else real_find_spec(name, *a),
    )
    assert run_notebooks.main([str(notebook)]) == 2
    assert 'pip install "simplepo-helpers[notebook]"' in capsys.readouterr().err


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
    assert {"learn", "notebook", "dev", "browser"} <= set(re.findall(r"^Provides-Extra: (\S+)$", meta, re.M))
    repository = tomllib.loads((REPO / "colab.toml").read_text())["repository"]
    assert f"Project-URL: Source, https://github.com/{repository}" in meta


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
