"""Runs one nameko service class as a process: ``python -m kernel.runner module:Class``.

eventlet must patch the standard library before anything else is imported, psycopg2 included
(eventlet then makes it cooperative). SIGTERM stops the service gracefully: entrypoints stop
taking work, in-flight workers finish, then connections close.
"""

import warnings

# Known and accepted: nameko 2.14 runs on eventlet (see README, "Versions").
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import importlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from nameko.cli.run import run  # noqa: E402

from kernel.config import ConfigurationError, Settings  # noqa: E402
from kernel.db import DatabaseUnavailable  # noqa: E402
from kernel.tracing import setup_tracing  # noqa: E402


def load(path: str) -> type:
    module_name, _, class_name = path.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


class ExpectedErrorsInOneLine(logging.Filter):
    """nameko logs an expected domain error (a 404, a 422) with its whole traceback: one line
    naming the worker and the error type says all an operator needs, and quotes no request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("(expected)") and record.exc_info:
            error = record.exc_info[0]
            worker = record.args[0] if isinstance(record.args, tuple) and record.args else ""
            record.msg = "(expected) %s in %s"
            record.args = (error.__name__ if error else "error", worker)
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m kernel.runner module.path:ServiceClass", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("nameko.containers").addFilter(ExpectedErrorsInOneLine())
    try:
        settings = Settings.from_env()
        service_cls = load(argv[0])
        setup_tracing(getattr(service_cls, "name"), settings.traces_exporter)  # noqa: B009
        run([service_cls], settings.nameko_config())
    except (ConfigurationError, DatabaseUnavailable) as exc:
        print(f"{argv[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
