"""The Lua scripts of the Redis driver: loaded once from lua/*.lua, run by SHA.

Each script is read with importlib.resources when first needed and its SHA1 computed here, so
a call is always EVALSHA: the script text crosses the network only in SCRIPT LOAD. A server
that forgot the scripts (restart, SCRIPT FLUSH, failover) answers NOSCRIPT; the scripts are
then loaded again and the refused calls, and only those, are sent again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from typing import Any, Protocol

from redis.exceptions import NoScriptError

__all__ = [
    "SCRIPT_NAMES",
    "Batch",
    "Client",
    "Pipeline",
    "Script",
    "ScriptRunner",
    "ThreadClient",
    "load_scripts",
]

#: A script's line that stands for a shared file of lua/ (see `_included`).
INCLUDE = "-- include: "

#: One script per verb; the file lua/<name>.lua documents its KEYS and ARGV.
SCRIPT_NAMES = (
    "push",
    "push_one",
    "reserve",
    "renew",
    "ack",
    "release",
    "fail",
    "retry",
    "purge",
    "prune",
    "counts",
    "beat",
    "cancel",
    "mark_tick",
    "list",
    "reindex",
    "unindex",
    "throughput",
)


class Pipeline(Protocol):
    """The part of a redis-py asyncio pipeline the driver uses."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...

    async def execute(self, raise_on_error: bool = True) -> list[Any]: ...


class Client(Protocol):
    """The part of a redis-py asyncio client the driver uses."""

    async def execute_command(self, *args: Any, **options: Any) -> Any: ...

    def pipeline(self, transaction: bool = True) -> Pipeline: ...


class ThreadClient(Protocol):
    """The part of a synchronous redis-py client the driver uses (`push_in_thread`)."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...


#: How a command is sent on a client: `await execute(client, *args)`.
Execute = Callable[..., Awaitable[Any]]


async def _execute_command(client: Client, *args: Any) -> Any:
    return await client.execute_command(*args)


def _execute_in_thread(client: ThreadClient, *args: Any) -> Any:
    return client.execute_command(*args)


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script: its verb, its source and the SHA1 the server knows it by."""

    name: str
    source: str
    sha: str


@functools.cache
def load_scripts() -> Mapping[str, Script]:
    """Every script, read from the package once per process."""
    folder = importlib.resources.files(__package__) / "lua"
    scripts = {}
    for name in SCRIPT_NAMES:
        source = _included(folder, (folder / f"{name}.lua").read_text(encoding="utf-8"))
        sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
        scripts[name] = Script(name, source, sha)
    return scripts


def _included(folder: Traversable, source: str) -> str:
    """`source` with each line `-- include: FILE` replaced by lua/FILE: code several scripts
    share (Redis runs each script alone, with nothing to import)."""
    lines = source.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith(INCLUDE):
            lines[index] = (folder / line.removeprefix(INCLUDE).strip()).read_text(encoding="utf-8")
    return "".join(lines)


@dataclass(slots=True)
class Batch:
    """Commands for one round trip: script calls by verb and plain commands, in order."""

    calls: list[tuple[str | None, tuple[Any, ...]]] = field(default_factory=list)

    def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Call the script `name` with these KEYS and ARGV."""
        self.calls.append((name, (len(keys), *keys, *args)))

    def command(self, *args: Any) -> None:
        """Send a plain command, such as ("SADD", key, member)."""
        self.calls.append((None, args))


class ScriptRunner:
    """Runs scripts by SHA on a client, loading them again when the server answers NOSCRIPT."""

    def __init__(self, scripts: Mapping[str, Script] | None = None) -> None:
        self.scripts = scripts if scripts is not None else load_scripts()
        #: How many times scripts were loaded: a change says the server had forgotten them
        #: (and, restarted without persistence, its data with them).
        self.loads = 0

    async def load(self, client: Client) -> None:
        """SCRIPT LOAD every script, in one round trip."""
        pipe = client.pipeline(transaction=False)
        for script in self.scripts.values():
            pipe.execute_command("SCRIPT LOAD", script.source)
        self.loads += 1
        await pipe.execute()

    async def call(
        self,
        client: Client,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        execute: Execute | None = None,
    ) -> Any:
        """Run one script and return its reply; `execute(client, *command)` sends it, if
        given (connection.execute), else the client's execute_command."""
        command = self._evalsha(name, (len(keys), *keys, *args))
        send = execute or _execute_command
        try:
            return await send(client, *command)
        except NoScriptError:
            await self.load(client)
            return await send(client, *command)

    def call_in_thread(
        self,
        client: ThreadClient,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        execute: Callable[..., Any] | None = None,
    ) -> Any:
        """`call` on a synchronous client, from the caller's own thread, sent by `execute`
        (connection.execute_in_thread) if given. On NOSCRIPT only this script is loaded again
        (the event loop's calls load the others when they need them)."""
        command = self._evalsha(name, (len(keys), *keys, *args))
        send = execute or _execute_in_thread
        try:
            return send(client, *command)
        except NoScriptError:
            self.loads += 1
            client.execute_command("SCRIPT LOAD", self.scripts[name].source)
            return send(client, *command)

    async def run(self, client: Client, batch: Batch, *, transaction: bool = False) -> list[Any]:
        """Send a batch in one pipeline (MULTI/EXEC with `transaction`); returns the replies.

        A script refused with NOSCRIPT did not run: it is sent again on its own after the
        scripts are loaded; in a transaction the whole batch is sent again, as a transaction,
        so that it stays all or nothing. Every script is written so that this is safe: a
        push already stored stores nothing twice (see lua/push.lua).
        """
        replies = await self._send(client, batch, transaction)
        if transaction and any(isinstance(reply, NoScriptError) for reply in replies):
            await self.load(client)
            replies = await self._send(client, batch, transaction)
        loaded = False
        for index, reply in enumerate(replies):
            name, args = batch.calls[index]
            if isinstance(reply, NoScriptError) and name is not None:
                if not loaded:
                    await self.load(client)
                    loaded = True
                replies[index] = await client.execute_command(*self._evalsha(name, args))
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _send(self, client: Client, batch: Batch, transaction: bool) -> list[Any]:
        pipe = client.pipeline(transaction=transaction)
        for name, args in batch.calls:
            pipe.execute_command(*(args if name is None else self._evalsha(name, args)))
        return list(await pipe.execute(raise_on_error=False))

    def _evalsha(self, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return ("EVALSHA", self.scripts[name].sha, *args)
