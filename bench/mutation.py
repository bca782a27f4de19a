"""Mutation testing of the money, delivery and signature modules: which changes to the code no unit test notices.

Each module runs in its own mutmut work folder (`mutants/<module>/`): mutmut copies the project there, changes
one thing at a time (a `<` to `<=`, a constant, a dropped call) and runs only the unit tests that reach the
changed function, among the module's own test files below. A mutant no test notices survives. Prints one line
per module (mutants, killed, survived, timeout, score) and each survivor's change. Usage:

    python3 dev.py mutate                          # every module
    python3 dev.py mutate senders outbox --jobs 2  # some, two modules at a time
    python3 dev.py mutate senders --again          # the last run's survivors (and changed code) against today's tests
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "mutants"
MUTMUT = Path(sys.executable).with_name("mutmut")
READERS = ["tests/unit/test_payment_readers.py"]  # the payments modules are pure functions: their direct tables

# module name -> (source file, the unit test files that speak of it)
MODULES = {
    "payments/common": ("services/api/payments/common.py", READERS),
    "payments/stripe": ("services/api/payments/stripe.py", READERS),
    "payments/paytm": ("services/api/payments/paytm.py", READERS),
    "payments/mpesa": ("services/api/payments/mpesa.py", READERS),
    "outbox": ("shared/outbox.py", ["tests/component/test_outbox.py", "tests/component/test_publisher.py"]),
    "publisher": ("shared/publisher.py", ["tests/component/test_publisher.py", "tests/component/test_outbox.py"]),
    "senders": ("services/mailer/senders.py", ["tests/unit/test_senders.py", "tests/unit/test_smtp_failures.py",
                                               "tests/unit/test_overlapped_sends.py",
                                               "tests/component/test_smtp_security.py",
                                               "tests/component/test_mailer.py"]),
    "delivery": ("services/mailer/delivery.py", ["tests/component/test_mail_delivery.py",
                                                 "tests/component/test_mailer.py"]),
    "links": ("services/media/links.py", ["tests/component/test_downloads.py"]),
    "grants": ("services/media/handlers.py", ["tests/component/test_grants.py", "tests/component/test_downloads.py"]),
}
DETECTED = {"killed", "timeout", "caught by type check"}


@dataclass
class Score:
    module: str
    statuses: dict[str, str] = field(default_factory=dict)  # mutant name -> mutmut's status
    changes: dict[str, str] = field(default_factory=dict)  # survivor -> its change, as a diff's -/+ lines
    error: str = ""

    def count(self, *statuses: str) -> int:
        return sum(1 for s in self.statuses.values() if s in statuses)

    @property
    def survivors(self) -> list[str]:
        return sorted(name for name, status in self.statuses.items() if status not in DETECTED)

    @property
    def percent(self) -> float:
        return 100 * (len(self.statuses) - len(self.survivors)) / len(self.statuses) if self.statuses else 0.0


def workdir(module: str) -> Path:
    """A fresh folder that looks like the project to mutmut, whose config names only `module` and its tests."""
    folder = WORK / module.replace("/", "-")
    shutil.rmtree(folder, ignore_errors=True)  # earlier verdicts were against earlier code and tests
    folder.mkdir(parents=True)
    for name in ("services", "shared", "tests"):
        (folder / name).symlink_to(ROOT / name)
    source, tests = MODULES[module]
    config = (ROOT / "pyproject.toml").read_text()
    assert "[tool.mutmut]" not in config
    (folder / "pyproject.toml").write_text(config + "\n[tool.mutmut]\n" + "\n".join([
        'source_paths = ["services", "shared"]',
        f'only_mutate = ["{source}"]',
        f"pytest_add_cli_args_test_selection = {tests!r}".replace("'", '"'),
        # The project's addopts summary lines are noise in a child's output; the cache would be shared.
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-o", "addopts="]',
        "use_git_change_detection = false",
    ]) + "\n")
    return folder


def results(folder: Path) -> dict[str, str]:
    """Mutant name -> mutmut's status, from the last run in `folder`."""
    listed = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=folder, capture_output=True, text=True,
                            check=True).stdout
    return dict(re.findall(r"^\s+(\S+): (.+)$", listed, re.MULTILINE))


def mutate(module: str, again: bool = False) -> Score:
    """Run mutmut over one module (one child at a time: the component tier's databases are one folder per process).
    `again`: keep the last run's verdicts, test its survivors and the changed functions against today's tests."""
    score = Score(module)
    folder = WORK / module.replace("/", "-")
    again = again and (folder / "mutants").is_dir()
    if not again:
        folder = workdir(module)
    log = folder / "mutmut.log"
    env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("w") as out:
        def run(names: list[str]) -> int:
            return subprocess.run([str(MUTMUT), "run", "--max-children", "1", *names], cwd=folder, stdout=out,
                                  stderr=subprocess.STDOUT, env=env).returncode

        # The mutants not checked yet (all of them, or those of functions changed since); when asked again, then the
        # survivors, whose verdicts mutmut otherwise keeps.
        code = run([])
        if again and code == 0 and (survivors := [n for n, st in results(folder).items() if st not in DETECTED]):
            code = run(survivors)
    if code != 0:
        score.error = f"mutmut exited with {code}; see {log.relative_to(ROOT)}"
        return score
    score.statuses = results(folder)
    for name in score.survivors:
        diff = subprocess.run([str(MUTMUT), "show", name], cwd=folder, capture_output=True, text=True).stdout
        score.changes[name] = " / ".join(line.strip() for line in diff.splitlines()
                                         if line[:1] in "-+" and line[:3] not in ("---", "+++"))
    return score


def report(scores: list[Score]) -> str:
    lines = [f"{'module':<18}{'mutants':>8}{'killed':>8}{'survived':>9}{'timeout':>8}{'score':>8}"]
    for s in scores:
        if s.error:
            lines.append(f"{s.module:<18} {s.error}")
            continue
        lines.append(f"{s.module:<18}{len(s.statuses):>8}{s.count('killed', 'caught by type check'):>8}"
                     f"{len(s.survivors):>9}{s.count('timeout'):>8}{s.percent:>7.1f}%")
    for s in scores:
        for name in s.survivors:
            lines.append(f"\n{s.statuses[name]}: {name}\n    {s.changes.get(name, '')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"any of: {', '.join(MODULES)} (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="modules mutated at the same time (default 1)")
    parser.add_argument("--min-score", type=float, default=90.0, help="exit 1 when a module scores below this")
    parser.add_argument("--again", action="store_true",
                        help="keep the last run's verdicts; test its survivors and changed functions again")
    args = parser.parse_args(argv)
    if unknown := [m for m in args.modules if m not in MODULES]:
        parser.error(f"unknown module {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    modules = args.modules or list(MODULES)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        scores = list(pool.map(lambda module: mutate(module, args.again), modules))
    print(report(scores))
    return 0 if all(not s.error and s.percent >= args.min_score for s in scores) else 1


if __name__ == "__main__":
    sys.exit(main())
