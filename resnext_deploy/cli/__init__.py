"""The ``resnext-deploy`` command line: options -> config object -> library call -> rendering.

User errors (:class:`DeployError`) and usage errors (a bad option or argument) end in one
``error:`` line on stderr and exit status 1; Ctrl-C and SIGTERM end a command alike (status 130 or
143), with its cleanup run. Heavy imports happen inside commands so that ``predict`` never
imports torch.
"""

from resnext_deploy.cli.app import app, main

# Importing a command module registers its commands; `--help` lists them in this order.
# isort: off
from resnext_deploy.cli import model_commands  # noqa: F401, E402
from resnext_deploy.cli import bench_commands  # noqa: F401, E402
from resnext_deploy.cli import serve_commands  # noqa: F401, E402

# isort: on

__all__ = ["app", "main"]
