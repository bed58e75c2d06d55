"""The `conveyor` command: parses arguments and calls the public API; no logic of its own.

`main` is the click group (app.py); each module adds its commands: work.py (`work`),
inspect.py (`list`, `job`, `config`), failed.py (`failed ...`), control.py (`cancel`,
`queue ...`, `schedule list`, `chain`, `migrate`, `backup`, `restore`, `prune`) and push.py
(`push`). The seed's spellings `queue:work` and `queue:list` are aliases of `work` and `list`.
"""

from __future__ import annotations

from conveyor.cli.app import load_app, main
from conveyor.cli.control import (
    backup,
    cancel,
    chain,
    dashboard,
    migrate,
    prune,
    queue,
    restore,
    schedule,
)
from conveyor.cli.failed import failed
from conveyor.cli.inspect import config_, job, list_
from conveyor.cli.push import push
from conveyor.cli.work import work

for command in (work, list_, job, config_, push, failed, cancel, queue, schedule, chain,
                migrate, backup, restore, prune, dashboard):  # fmt: skip
    main.add_command(command)

__all__ = ["load_app", "main"]
