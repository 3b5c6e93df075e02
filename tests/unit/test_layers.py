"""The layers ``make lint`` keeps (pyproject.toml, ``[tool.importlinter]``): the real tree keeps
every contract, and a copy of it with one forbidden import breaks the contract meant to catch it.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway import operations
from kernel import deadletters
from services import platform

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kernel", "services", "gateway")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

KERNEL = "The kernel imports no service and no gateway"
SERVICES = "A service imports another only through its contracts module"
GATEWAY = "The gateway imports nothing of the services but their contracts modules"
CONTRACTS = "A contracts module declares: it loads none of its service's workings"
STORES = "The store wiring and crypto import no nameko adapter"
REQUESTS = "Retention's requests import neither what completes them nor the schedules"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "--config", "pyproject.toml"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_of_tree(into: Path) -> Path:
    """The three packages' Python files and the lint configuration, nothing else."""
    shutil.copy(ROOT / "pyproject.toml", into / "pyproject.toml")
    for package in PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            target = into / source.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    return into


def test_the_tree_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (KERNEL, SERVICES, GATEWAY, CONTRACTS, STORES, REQUESTS):
        assert f"{name} KEPT" in result.stdout
    assert "6 kept, 0 broken" in result.stdout


# (module added to the copy, its source, the contract it breaks)
VIOLATIONS = [
    # what kernel/deadletters.py did before: a platform import inside a function
    (
        "kernel/violation.py",
        "def queues():\n    from services.platform import RPC_SERVERS\n\n    return RPC_SERVERS\n",
        KERNEL,
    ),
    ("kernel/violation.py", "from gateway import problems\n", KERNEL),
    ("services/retention/violation.py", "from services.accounts import domain\n", SERVICES),
    ("services/audit/violation.py", "from services.tickets.commands import TAG\n", SERVICES),
    ("services/tickets/violation.py", "from gateway import schemas\n", SERVICES),
    ("gateway/violation.py", "from services.tickets import handlers\n", GATEWAY),
    ("gateway/violation.py", "from services import platform\n", GATEWAY),
    ("services/billing/contracts.py", "from services.billing import service\n", CONTRACTS),
    ("kernel/crypto/violation.py", "from kernel.nameko_adapters import common\n", STORES),
    ("kernel/stores.py", "from kernel.nameko_adapters.store import store_of\n", STORES),
    ("services/retention/requests.py", "from services.retention import receipts\n", REQUESTS),
    ("services/retention/approvals.py", "from services.retention import schedules\n", REQUESTS),
]


@pytest.mark.parametrize(("module", "source", "contract"), VIOLATIONS)
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, source, contract):
    tree = copy_of_tree(tmp_path)
    with (tree / module).open("a") as file:
        file.write(textwrap.dedent(source))
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout, result.stdout + result.stderr
    # the violation named, not some other breakage of the copy
    assert module.removesuffix(".py").replace("/", ".") in result.stdout


def test_the_gateway_lists_the_platforms_queues():
    """The gateway knows the services by their contracts modules, the platform by their service
    classes, both from the one list of names (kernel.platform): the same services, in the same
    order (the order dead letters are listed in)."""
    assert operations.SERVICES == tuple(platform.SERVICES)
    assert list(operations.DEAD_LETTER_QUEUES) == platform.dead_letter_queues()


def test_rpc_queues_are_known_by_their_name():
    for service in platform.RPC_SERVERS:
        assert deadletters.is_rpc_queue(f"rpc-{service}")
        assert deadletters.is_rpc_queue(f"rpc-{service}.dead")
    for subscription in platform.subscriptions():
        assert not deadletters.is_rpc_queue(subscription.queue)
    assert not deadletters.is_rpc_queue("rpc-")


def test_no_two_test_modules_share_a_basename():
    """The test folders are not packages: two modules of one name stop pytest collecting both."""
    root = Path(__file__).resolve().parents[1]
    names = collections.Counter(path.name for path in root.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
