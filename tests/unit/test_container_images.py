"""The container images: operator/Dockerfile, optimizer_jobs/Dockerfile, model_server/Dockerfile (CPU pools) and
model_server/Dockerfile.gpu (GPU pools).

No Docker engine runs here, so no image is built. What is checked instead: hadolint (from its PyPI wheel) and
BuildKit's own checks (deploy/images/lint.py, compiled from the Go module proxy) find nothing; the build context is
what .dockerignore should let through (Docker's own matcher); each Dockerfile, read stage by stage
(dockerfile-parse), is multi-stage with a non-root numeric USER in the final stage, pinned bases and exec-form
entrypoints equal to the commands the operator's pods complete and the local cluster's node agent runs; each image's requirement set resolves to wheels on PyPI for the image's Python and
platform, without torch in the server images and with onnxruntime-gpu (not onnxruntime) in the gpu one; and every
module of an image's packages imports with only the distributions that image installs. docs/images.md says what
that leaves unchecked.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
NONROOT_UID = 65532  # the uid the operator's pods run as (runAsUser in the builders and the chart)


@dataclass(frozen=True)
class Image:
    dockerfile: str
    repository: str  # the default repository (chart values, the operator's defaults, the node agent's map)
    extra: str  # the pyproject extra the builder stage installs
    python: str  # the base's Python, for resolving wheels
    glibc: int  # the base's glibc minor version (2.N), for resolving manylinux wheels
    packages: tuple[str, ...]  # the project's packages the image runs


# Debian bookworm: glibc 2.36, python:3.11 images. Ubuntu 24.04 (the CUDA base): glibc 2.39, python3 3.12.
IMAGES = {
    "operator": Image("operator/Dockerfile", "optimodel/operator", "operator", "3.11", 36,
                      ("optimodel_operator", "optimodel_contracts")),
    "jobs": Image("optimizer_jobs/Dockerfile", "optimodel/jobs", "jobs", "3.11", 36,
                  ("optimodel_jobs", "optimodel_contracts")),
    "server": Image("model_server/Dockerfile", "optimodel/server", "server", "3.11", 36,
                    ("optimodel_server", "optimodel_contracts")),
    "server-gpu": Image("model_server/Dockerfile.gpu", "optimodel/server-gpu", "server-gpu", "3.12", 39,
                        ("optimodel_server", "optimodel_contracts")),
}
# Bases pinned by tag only, on purpose: the release pipeline passes the tag with its digest as this build argument
# (the digest could not be resolved where the Dockerfile was written). Every other base carries its digest.
TAG_ONLY_BASE_ARGS = {"model_server/Dockerfile.gpu": "CUDA_BASE"}


# --- reading a Dockerfile ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    name: str | None
    image: str  # ARG defaults substituted
    instructions: list[dict[str, Any]]  # dockerfile-parse's structure, FROM excluded


@cache
def parsed(dockerfile: str) -> DockerfileParser:
    # From bytes: given a path, the parser takes any name but `Dockerfile` for a directory (Dockerfile.gpu).
    return DockerfileParser(fileobj=io.BytesIO((REPO / dockerfile).read_bytes()))


def global_args(dockerfile: str) -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults (what `FROM ${...}` substitutes)."""
    args: dict[str, str] = {}
    for instruction in parsed(dockerfile).structure:
        if instruction["instruction"] == "FROM":
            break
        if instruction["instruction"] == "ARG":
            name, _, default = instruction["value"].partition("=")
            args[name.strip()] = default.strip().strip('"')
    return args


def substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def stages(dockerfile: str) -> list[Stage]:
    args = global_args(dockerfile)
    found: list[Stage] = []
    for instruction in parsed(dockerfile).structure:
        if instruction["instruction"] == "FROM":
            words = instruction["value"].split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(name, substitute(words[0], args), []))
        elif found and instruction["instruction"] != "COMMENT":
            found[-1].instructions.append(instruction)
    return found


def instructions(stage: Stage, kind: str) -> list[str]:
    return [i["value"] for i in stage.instructions if i["instruction"] == kind]


def exec_form(value: str) -> list[str]:
    """An ENTRYPOINT/CMD in exec form (a JSON array); anything else fails: shell form runs through /bin/sh."""
    words = json.loads(value)
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), value
    return words


def pip_installs(stage: Stage) -> list[list[str]]:
    """The arguments of each `pip install` in the stage's RUN lines."""
    found = []
    for run in instructions(stage, "RUN"):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    found.append(words[i + 2:])
    return found


# --- the linters: hadolint and BuildKit's checks (deploy/images/lint.py) -----------------------------------------


def _load_lint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("optimodel_images_lint", REPO / "deploy/images/lint.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lint = _load_lint()


def test_lint_covers_every_image() -> None:
    assert set(lint.DOCKERFILES) == {spec.dockerfile for spec in IMAGES.values()}


def hadolint(dockerfile: Path, tmp_path: Path) -> list[str]:
    # An explicit config: a hadolint.yaml of the user's own (or in the working directory) must not relax the check.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\nignored: []\n")
    return lint.hadolint_findings(dockerfile, config)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_hadolint_finds_nothing(image: str, tmp_path: Path) -> None:
    findings = hadolint(REPO / IMAGES[image].dockerfile, tmp_path)
    assert findings == [], "\n".join(findings)


def test_hadolint_is_live(tmp_path: Path) -> None:
    """The linter the test above trusts does report: an unpinned base, pip with its cache, apt without pins."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nRUN apt-get install -y curl\n")
    codes = {finding.split()[1] for finding in hadolint(bad, tmp_path)}
    assert {"DL3007", "DL3042", "DL3013", "DL3008"} <= codes, codes


def test_buildkit_checks_find_nothing() -> None:
    """BuildKit's own rules (those of `docker build --check`), compiled from the Go module proxy on first use."""
    paths = [REPO / spec.dockerfile for spec in IMAGES.values()]
    findings = lint.buildkit_findings(paths)
    assert set(findings) == {str(path) for path in paths}
    assert all(found == [] for found in findings.values()), findings


def test_buildkit_checks_are_live(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("from python:3.11 as b\nENV API_TOKEN=x\nCMD echo hi\nWORKDIR relative\n")
    findings = lint.buildkit_findings([bad])[str(bad)]
    rules = {line.split(": ")[1] for line in findings}
    assert {"SecretsUsedInArgOrEnv", "JSONArgsRecommended", "WorkdirRelativePath"} <= rules, findings


# --- structure --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_multi_stage_the_final_stage_copies_the_builders_venv_and_runs_as_non_root(image: str) -> None:
    dockerfile = IMAGES[image].dockerfile
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2, f"{dockerfile}: one stage"
    builder, final = all_stages[0], all_stages[-1]
    assert builder.name, f"{dockerfile}: the builder stage has no name"
    assert f"--from={builder.name} /opt/venv /opt/venv" in instructions(final, "COPY")
    # The last USER of the final stage is what the container runs as: numeric (runAsNonRoot can verify it without
    # a passwd entry) and the uid the pods ask for.
    users = instructions(final, "USER")
    assert users, f"{dockerfile}: the final stage runs as root"
    uid, _, gid = users[-1].partition(":")
    assert uid == str(NONROOT_UID) and gid in ("", str(NONROOT_UID)), users[-1]
    # Nothing is installed from a registry in the final stage, and nothing fetched when the container starts.
    assert pip_installs(final) == [], f"{dockerfile}: pip in the final stage"
    for kind in ("ENTRYPOINT", "CMD"):
        for value in instructions(final, kind):
            words = exec_form(value)
            assert not {"pip", "curl", "wget", "apt-get", "sh", "bash"} & set(words), words
    # No `# syntax=` directive: it would pull a frontend image, by a moving tag, at every build.
    assert not (REPO / dockerfile).read_text().lstrip().startswith("# syntax"), dockerfile
    # The venv's commands come first on PATH (the operator's Deployment runs `optimodel ...` by name).
    assert any(env.startswith("PATH=/opt/venv/bin:") for env in instructions(final, "ENV")), dockerfile


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_bases_are_pinned(image: str) -> None:
    dockerfile = IMAGES[image].dockerfile
    names: set[str] = set()
    assert stages(dockerfile), f"{dockerfile}: no FROM found (nothing would be checked)"
    for stage in stages(dockerfile):
        if stage.image in names:  # an earlier stage
            continue
        assert "$" not in stage.image, f"{dockerfile}: base {stage.image!r} names an ARG without a default"
        match = re.fullmatch(r"(?P<repo>[\w./-]+):(?P<tag>[\w.-]+)(@sha256:(?P<digest>[0-9a-f]{64}))?", stage.image)
        assert match, f"{dockerfile}: base {stage.image!r} is not repository:tag[@sha256:digest]"
        # A release tag to its patch version (3.11.14-..., 13.0.3-...), never a moving one such as latest or 3.11.
        assert re.match(r"\d+\.\d+\.\d+(-|$)", match["tag"]), f"{dockerfile}: tag {match['tag']!r} moves"
        if not match["digest"]:
            arg = TAG_ONLY_BASE_ARGS.get(dockerfile)
            assert arg and global_args(dockerfile)[arg] == stage.image, f"{dockerfile}: {stage.image!r} has no digest"
            # ... and the Dockerfile says how the release pipeline pins it.
            assert f"--build-arg {arg}={stage.image}@sha256:" in (REPO / dockerfile).read_text()
        if stage.name:
            names.add(stage.name)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_the_builder_installs_the_images_extra_from_wheels(image: str) -> None:
    spec = IMAGES[image]
    installs = [args for stage in stages(spec.dockerfile) for args in pip_installs(stage)]
    assert installs == [["--no-cache-dir", "--only-binary=:all:", f".[{spec.extra}]"]], installs
    assert spec.extra in PYPROJECT["project"]["optional-dependencies"]


def test_the_gpu_extra_is_the_server_extra_with_onnxruntime_gpu() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    server = {canonicalize_name(Requirement(r).name): Requirement(r) for r in extras["server"]}
    gpu = {canonicalize_name(Requirement(r).name): Requirement(r) for r in extras["server-gpu"]}
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    assert set(gpu) - {"onnxruntime-gpu"} == set(server) - {"onnxruntime"}
    for name in set(server) - {"onnxruntime"}:
        assert (str(gpu[name].specifier), gpu[name].extras) == (str(server[name].specifier), server[name].extras), name
    # 1.27 is the first onnxruntime-gpu built for CUDA 13, the major version of the gpu image's CUDA base.
    assert gpu["onnxruntime-gpu"].specifier.contains("1.27.0") and not gpu["onnxruntime-gpu"].specifier.contains("1.26.0")
    assert global_args("model_server/Dockerfile.gpu")["CUDA_BASE"].startswith("nvidia/cuda:13.")


def test_dockerignore_lets_in_what_the_builders_copy_and_nothing_else() -> None:
    """The build context, as Docker's own matcher reads .dockerignore (moby/patternmatcher, in dockerfilelint)."""
    context = set(lint.context_files(REPO))
    copied = {source for spec in IMAGES.values() for stage in stages(spec.dockerfile)
              for copy in instructions(stage, "COPY") if not copy.startswith("--from")
              for source in copy.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "contracts", "operator", "optimizer_jobs", "model_server",
                      "deploy/localcluster"}
    # Every tracked file of what the builders copy is in the context ...
    tracked = subprocess.run(["git", "ls-files", *sorted(copied)], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert len(tracked) > 50
    assert {path for path in tracked if "Dockerfile" not in path} <= context
    # ... and nothing else: no tests, .git, caches, venvs, build outputs, nor the Dockerfiles themselves.
    outside = sorted(path for path in context if not any(path == c or path.startswith(c + "/") for c in copied))
    assert outside == [], outside
    assert not [path for path in context if "__pycache__" in path or path.endswith((".pyc", "PKG-INFO"))
                or "/Dockerfile" in path]


# --- entrypoints ------------------------------------------------------------------------------------------------


def final_stage(image: str) -> Stage:
    return stages(IMAGES[image].dockerfile)[-1]


def test_server_and_job_entrypoints_are_the_commands_the_cluster_runs() -> None:
    """The operator's server Deployments and Jobs pass only args: the image's ENTRYPOINT is the command they
    complete, the same the local cluster's node agent runs for that repository."""
    from optimodel_localcluster.node_agent.config import _default_entrypoints

    node_agent = _default_entrypoints()
    for image in ("server", "server-gpu", "jobs"):
        entrypoint = exec_form(instructions(final_stage(image), "ENTRYPOINT")[-1])
        assert entrypoint == node_agent[IMAGES[image].repository], image
        assert entrypoint[:2] == ["python", "-m"], entrypoint
        # `python -m optimodel_server` needs the package's __main__ module.
        main = REPO / {"server": "model_server/optimodel_server", "server-gpu": "model_server/optimodel_server",
                       "jobs": "optimizer_jobs/optimodel_jobs"}[image] / "__main__.py"
        assert main.parent.name == entrypoint[2] and main.is_file(), main


def test_builders_leave_the_command_to_the_image() -> None:
    from optimodel_operator.api.spec import parse_spec
    from optimodel_operator.builders.job import build_job
    from optimodel_operator.builders.server import build_server_deployment
    from optimodel_operator.planner.revision import job_plans
    from optimodel_operator.planner.view import PlannerConfig, ResourceView
    from optimodel_operator.testing.manifests import base_manifest

    spec = base_manifest()["spec"]
    parsed_spec = parse_spec(spec)
    view = ResourceView(name="m", namespace="ns", generation=1, spec=spec, uid="uid-1")
    config = PlannerConfig()
    job = build_job(view, parsed_spec, job_plans(parsed_spec, "m", "file:///store")[0], "r1", "file:///store", config)
    server = build_server_deployment(view, parsed_spec.node_pools[0], "r1", "int8", "file:///store/m.json", "a" * 64,
                                     config)
    for workload, repository in ((job, "optimodel/jobs"), (server, "optimodel/server")):
        container = workload["spec"]["template"]["spec"]["containers"][0]
        assert "command" not in container and container["args"], container
        assert container["image"].split(":")[0] == repository
        # The pods' uid is the images' USER.
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == NONROOT_UID


def test_the_operator_image_runs_the_optimodel_command() -> None:
    final = final_stage("operator")
    entrypoint = exec_form(instructions(final, "ENTRYPOINT")[-1])
    cmd = exec_form(instructions(final, "CMD")[-1])
    assert entrypoint == ["optimodel"] and cmd == ["operator", "run"]
    # `optimodel` is the distribution's console script (the venv's bin/, first on the image's PATH) ...
    assert PYPROJECT["project"]["scripts"]["optimodel"] == "optimodel_operator.cli:app"
    # ... and the operator's Deployment runs `optimodel operator run ...` by name.
    import yaml

    deployment = yaml.safe_load((REPO / "deploy/kustomize/base/deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].split(":")[0] == IMAGES["operator"].repository
    assert container["command"][:3] == ["optimodel", "operator", "run"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == NONROOT_UID


def test_the_operator_defaults_name_the_images_repositories() -> None:
    from optimodel_operator.planner.view import PlannerConfig

    config = PlannerConfig()
    assert config.job_image.split(":")[0] == IMAGES["jobs"].repository
    assert config.server_image.split(":")[0] == IMAGES["server"].repository
    assert config.server_gpu_image.split(":")[0] == IMAGES["server-gpu"].repository


# --- what each image installs -----------------------------------------------------------------------------------


def requirements(extra: str) -> list[str]:
    project = PYPROJECT["project"]
    return [*project["dependencies"], *project["optional-dependencies"][extra]]


def resolve_on_pypi(image: Image, target: Path) -> set[str]:
    """The distributions `pip install .[extra]` installs in the image: pip's resolver against PyPI, for the base's
    Python and glibc, wheels only (as the Dockerfile's --only-binary=:all:)."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(image.glibc, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
               "--only-binary=:all:", "--python-version", image.python, "--target", str(target),
               "--disable-pip-version-check"]
    for platform in platforms:
        command += ["--platform", platform]
    done = subprocess.run([*command, *requirements(image.extra)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    return {canonicalize_name(item["metadata"]["name"]) for item in report["install"]}


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_images_requirements_resolve_to_wheels_and_only_the_jobs_image_carries_torch(
    image: str, tmp_path: Path,
) -> None:
    installed = resolve_on_pypi(IMAGES[image], tmp_path / "target")
    assert {"pydantic", "typer", "numpy"} <= installed  # the base dependencies, in every image
    if image == "jobs":
        assert {"torch", "onnx", "onnxruntime", "scikit-learn"} <= installed
        return
    assert "torch" not in installed and not any(name.startswith("nvidia-") for name in installed), sorted(installed)
    if image == "operator":
        assert {"kopf", "kubernetes", "prometheus-api-client"} <= installed
        assert not {"onnxruntime", "onnxruntime-gpu"} & installed
    if image == "server":
        assert {"onnxruntime", "starlette", "uvicorn"} <= installed and "onnxruntime-gpu" not in installed
    if image == "server-gpu":
        assert {"onnxruntime-gpu", "starlette", "uvicorn"} <= installed and "onnxruntime" not in installed


def installed_closure(reqs: list[str]) -> set[str]:
    """The distributions these requirements pull, read from the metadata of this venv's installed versions."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in reqs]
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        for line in metadata.distribution(req.name).requires or []:
            dependency = Requirement(line)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in req.extras or {""}):
                todo.append(dependency)
    return {name for name, _ in seen}


# Walks every module of the image's packages with a path finder that does not see the top-level modules of any
# distribution the image does not install: a module-level import of one fails as it would in the image. Modules
# that need more (e.g. the sample artifact's onnx) import it inside the function that needs it.
IMPORT_PROBE = """
import importlib, json, pkgutil, sys
from importlib.abc import MetaPathFinder
from importlib.machinery import PathFinder
refused = set(json.loads(sys.argv[1]))
assert not refused & {name.partition(".")[0] for name in sys.modules}, "loaded before the probe"
class ImagePathFinder(MetaPathFinder):
    # The path finder, blind to the refused modules: imports fail and find_spec probes say absent, as in the image.
    def find_spec(self, name, path=None, target=None):
        return None if name.partition(".")[0] in refused else PathFinder.find_spec(name, path, target)
sys.meta_path[sys.meta_path.index(PathFinder)] = ImagePathFinder()
failed, imported = [], 0
for root in json.loads(sys.argv[2]):
    package = importlib.import_module(root)
    for info in pkgutil.walk_packages(package.__path__, root + "."):
        if info.name.rpartition(".")[2] == "__main__":
            continue  # runs the command
        try:
            importlib.import_module(info.name)
            imported += 1
        except Exception as error:
            failed.append(f"{info.name}: {type(error).__name__}: {error}")
print(json.dumps({"failed": failed, "imported": imported}))
"""


@pytest.mark.parametrize("image", ["operator", "server", "jobs"])
def test_every_module_imports_with_only_the_images_distributions(image: str) -> None:
    spec = IMAGES[image]
    # pip and setuptools: what `python -m venv` puts in the venv (Python 3.11); optimodel: the project itself.
    allowed = installed_closure(requirements(spec.extra)) | {"optimodel", "pip", "setuptools"}
    refused = sorted(module for module, dists in metadata.packages_distributions().items()
                     if not any(canonicalize_name(d) in allowed for d in dists))
    if image != "jobs":
        assert "torch" in refused and "torch" not in allowed
    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, json.dumps(refused), json.dumps(spec.packages)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed"] == [], "\n".join(result["failed"])
    assert result["imported"] >= 10, result


def test_the_operator_command_loads_with_only_the_operator_images_distributions() -> None:
    """`optimodel operator run --help` through the console script's module, with the server's, the optimizer's and
    the local cluster's commands registered as in the image (they import their heavy parts inside the commands)."""
    allowed = installed_closure(requirements("operator")) | {"optimodel", "pip", "setuptools"}
    refused = sorted(module for module, dists in metadata.packages_distributions().items()
                     if not any(canonicalize_name(d) in allowed for d in dists))
    probe = IMPORT_PROBE.split("failed, imported")[0] + (
        "sys.argv = ['optimodel', 'operator', 'run', '--help']\n"
        "from optimodel_operator.cli import app\n"
        "app()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, json.dumps(refused), "[]"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "--leader-elect" in done.stdout


def test_the_import_probe_is_live() -> None:
    """The probe above does hide modules: with numpy refused, the server's modules fail to import."""
    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, json.dumps(["numpy"]), json.dumps(["optimodel_server"])],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert any("No module named 'numpy'" in failure for failure in result["failed"]), result


def test_the_server_code_never_imports_torch() -> None:
    """Not even inside a function (which the import walk above would not reach): the server images have no torch.
    The import-linter contract keeps the server away from the optimizer; this keeps it away from torch itself."""
    heavy = {"torch", "torchvision", "onnxscript", "optimodel_jobs"}
    sources = [*(REPO / "model_server/optimodel_server").rglob("*.py"), *(REPO / "contracts").rglob("*.py")]
    assert len(sources) >= 10
    found = []
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            calls = ([node.args[0].value] if isinstance(node, ast.Call) and node.args
                     and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                     and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
                     else [])
            found += [f"{source.relative_to(REPO)}:{node.lineno} {name}" for name in names + calls
                      if name.partition(".")[0] in heavy]
    assert found == [], found
