"""A small Dockerfile linter for ftpipe's images (hadolint is not available on these machines).

Each rule takes parsed instructions and returns its problems, one line each; an empty list
passes. The tests run them on infra/docker/*.Dockerfile and on broken snippets.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass

from tests.infra.policies import image_pin_problem

ROOT_USERS = frozenset({"root", "0"})
TORCH_INDEX = "https://download.pytorch.org/whl/"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    args: str
    line: int


def parse(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile; comments (parser directives too) and blank lines dropped."""
    instructions, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines even inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    return instructions


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """Defaults of the ARGs declared before the first FROM (the ones FROM lines may use)."""
    defaults = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def base_images(instructions: list[Instruction]) -> list[str]:
    """Every FROM image, with ${ARG} defaults substituted."""
    defaults = global_args(instructions)
    images = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            images.append(
                re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), words[0])
            )
    return images


def arg_default(instructions: list[Instruction], name: str) -> str | None:
    """The default of ARG name, wherever declared."""
    for ins in instructions:
        if ins.keyword == "ARG" and ins.args.partition("=")[0].strip() == name:
            return ins.args.partition("=")[2].strip().strip('"') or None
    return None


def pip_installs(instructions: list[Instruction]) -> list[tuple[int, list[str]]]:
    """(line, argv) of every `pip install` command inside RUN instructions."""
    found = []
    for ins in instructions:
        if ins.keyword != "RUN":
            continue
        for command in re.split(r"&&|\|\||;", ins.args):
            try:
                argv = shlex.split(command)
            except ValueError:
                argv = command.split()
            for i in range(len(argv) - 1):
                if argv[i].endswith("pip") and argv[i + 1] == "install":
                    found.append((ins.line, argv[i + 2 :]))
                    break
    return found


def _packages(argv: list[str]) -> list[str]:
    """The positional requirements of a pip install argv (option values skipped)."""
    takes_value = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url"}
    takes_value |= {"--extra-index-url", "-f", "--find-links"}
    packages, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in takes_value:
            skip = True
        elif not arg.startswith("-"):
            packages.append(arg)
    return packages


def unpinned_base_images(instructions: list[Instruction]) -> list[str]:
    """Base images without an exact version tag or digest."""
    problems = []
    for image in base_images(instructions):
        if "$" in image:
            problems.append(f"FROM {image}: an ARG without a default")
        elif problem := image_pin_problem(image):
            problems.append(f"FROM {problem}")
    return problems


def runs_as_root(instructions: list[Instruction]) -> list[str]:
    """Images whose final user is root, unset, or a name Kubernetes cannot check as non-root."""
    users = [ins.args for ins in instructions if ins.keyword == "USER"]
    if not users:
        return ["no USER: the image runs as root"]
    user = users[-1].split(":")[0]
    if user in ROOT_USERS:
        return [f"final USER {users[-1]} is root"]
    if not user.isdigit():
        # runAsNonRoot can only verify a numeric uid; a name makes kubelet refuse the pod.
        return [f"final USER {users[-1]} is not a numeric uid"]
    return []


def unconstrained_pip_installs(instructions: list[Instruction]) -> list[str]:
    """pip installs that bypass constraints.txt (torch alone may, pinned exactly)."""
    problems = []
    for line, argv in pip_installs(instructions):
        packages = _packages(argv)
        if len(packages) == 1 and re.fullmatch(r"torch==[\w.${}]+", packages[0]):
            continue
        constrained = any(
            a in ("-c", "--constraint") and b == "constraints.txt"
            for a, b in itertools.pairwise(argv)
        )
        if not constrained:
            problems.append(f"line {line}: pip install {' '.join(argv)} without -c constraints.txt")
    return problems


def torch_not_installed_first(instructions: list[Instruction]) -> list[str]:
    """Component images install torch first, on its own, pinned, from the PyTorch index."""
    installs = pip_installs(instructions)
    if not installs:
        return ["no pip install at all"]
    line, argv = installs[0]
    packages = _packages(argv)
    if len(packages) != 1 or not packages[0].startswith("torch=="):
        return [f"line {line}: the first pip install is {packages}, not torch alone"]
    index = argv[argv.index("--index-url") + 1] if "--index-url" in argv else ""
    resolved = re.sub(
        r"\$\{?(\w+)\}?", lambda m: arg_default(instructions, m.group(1)) or "", index
    )
    if not resolved.startswith(TORCH_INDEX):
        return [f"line {line}: torch not installed from {TORCH_INDEX}<cpu|cuXXX>"]
    return []


def missing_revision_label(instructions: list[Instruction]) -> list[str]:
    """Images that do not record the git commit they were built from."""
    has_arg = any(i.keyword == "ARG" and i.args.split("=")[0] == "GIT_SHA" for i in instructions)
    has_label = any(
        i.keyword == "LABEL"
        and re.search(r'org\.opencontainers\.image\.revision="?\$\{?GIT_SHA', i.args)
        for i in instructions
    )
    if has_arg and has_label:
        return []
    return ["no ARG GIT_SHA with LABEL org.opencontainers.image.revision=${GIT_SHA}"]


def commit_not_in_environment(instructions: list[Instruction]) -> list[str]:
    """Component images whose processes cannot name their commit, or rebuild for every commit.

    ftpipe's lineage reads FTPIPE_GIT_SHA where there is no .git; a RUN after `ARG GIT_SHA` has
    the commit in its environment, so its layer (torch, ftpipe) is rebuilt for every commit.
    """
    problems = []
    if not any(
        i.keyword == "ENV" and re.search(r'\bFTPIPE_GIT_SHA="?\$\{?GIT_SHA\b', i.args)
        for i in instructions
    ):
        problems.append("no ENV FTPIPE_GIT_SHA=${GIT_SHA}")
    declared = [i.line for i in instructions if i.keyword == "ARG" and i.args == "GIT_SHA"]
    problems += [
        f"line {i.line}: RUN after ARG GIT_SHA (line {declared[0]}) reruns for every commit"
        for i in instructions
        if declared and i.keyword == "RUN" and i.line > declared[0]
    ]
    return problems


def remote_fetches(instructions: list[Instruction]) -> list[str]:
    """ADD (use COPY) and piping a download into a shell: unpinned code from the network."""
    problems = [f"line {i.line}: ADD {i.args}" for i in instructions if i.keyword == "ADD"]
    problems += [
        f"line {i.line}: download piped into a shell"
        for i in instructions
        if i.keyword == "RUN" and re.search(r"(curl|wget)[^|]*\|\s*(ba)?sh", i.args)
    ]
    return problems


ALL_RULES = (
    unpinned_base_images,
    runs_as_root,
    unconstrained_pip_installs,
    missing_revision_label,
    remote_fetches,
)
