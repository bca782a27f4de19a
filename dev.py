#!/usr/bin/env python3
"""Set-up and everyday commands on a fresh clone, with nothing but Python 3.11.

    python3 dev.py run     create .venv, install, run the whole system (embedded by default)
    python3 dev.py test    create .venv, install, run ruff, mypy and the whole test suite
    python3 dev.py install only create .venv and install (and k8s/tools' validator, with npm)
    python3 dev.py mutate  mutation testing of the money, delivery and signature modules (bench/mutation.py)

Extra arguments go to the command: `python3 dev.py test -k webhook`, `python3 dev.py run --port 9000`,
`python3 dev.py mutate senders outbox --jobs 2`.
"""

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".installed"
NODE_TOOLS = ROOT / "k8s" / "tools"  # KEDA's schemas for the manifest tests, from the npm registry


def install() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs before the venv exists)
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}.")
    if not (BIN / "python").exists():
        print(f"Creating {VENV} ...", flush=True)
        venv.create(VENV, with_pip=True)
    inputs = [ROOT / "pyproject.toml", ROOT / "constraints.txt"]
    newest = max(p.stat().st_mtime for p in inputs if p.exists())
    if STAMP.exists() and STAMP.stat().st_mtime >= newest:
        return
    print("Installing the project and its pinned dependencies ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[test]"], check=True)
    STAMP.touch()


def install_node_tools() -> None:
    lock, installed = NODE_TOOLS / "package-lock.json", NODE_TOOLS / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("npm is needed to install the Kubernetes manifest tests' tools (k8s/tools): install Node.js 20+.")
    print("Installing the manifest tests' tools (k8s/tools) ...", flush=True)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel", "error"], cwd=NODE_TOOLS, check=True)


def main() -> int:
    command, *rest = sys.argv[1:] or ["help"]
    if command not in ("run", "test", "install", "mutate"):
        print(__doc__)
        return 0 if command == "help" else 2
    install()
    install_node_tools()
    os.chdir(ROOT)
    if command == "run":
        # exec, not a child: a signal to this process (Ctrl-C, kill, a supervisor) reaches the server itself.
        os.execv(BIN / "market", [str(BIN / "market"), "up", *rest])
    if command == "test":
        lint = subprocess.call([str(BIN / "ruff"), "check", "shared", "services", "tests", "bench", "dev.py"])
        types = subprocess.call([str(BIN / "mypy")])  # shared/ and services/, as pyproject.toml's [tool.mypy] says
        tests = subprocess.call([str(BIN / "python"), "-m", "pytest", *rest])
        return tests or lint or types
    if command == "mutate":
        return subprocess.call([str(BIN / "python"), str(ROOT / "bench" / "mutation.py"), *rest])
    return 0


if __name__ == "__main__":
    sys.exit(main())
