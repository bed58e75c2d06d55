"""The dashboard's actions: what each button's POST does to a job or a queue, through the
registry's public API, and why one is refused (404: no such job or queue; 409: someone, or a
worker, acted on it since the page was drawn)."""

from __future__ import annotations

from conveyor.core import RegistryCore
from conveyor.job import JobInfo, JobState


class Refused(Exception):
    """An action refused: what is named does not exist (404), or its state forbids the
    action (409: someone, or a worker, acted on it since the page was drawn)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


async def perform(
    registry: RegistryCore, kind: str, action: str, target: str, queue: str = ""
) -> None:
    """Do `action` to the job or queue `target`; `queue` is the list the button was on."""
    registry.freeze()  # the implicit queue exists only once frozen
    if kind == "jobs":
        info = await registry.job_info(target)
        if info is None and action == "retry" and queue in registry.queues:
            # A backend that cannot look a job up by id (amqp) still retries it by its queue.
            if not await registry.retry_failed(queue, [target]):
                raise Refused(f"no failed job {target!r} in queue {queue!r}", 404)
            return
        if info is None:
            raise Refused(f"no job {target!r}", 404)
        said = f"job {info.id} is {info.state.value}"
        if action == "retry":
            if not await registry.retry_failed(info.queue, [info.id]):
                raise Refused(_not_retried(said, info))
        elif action == "cancel":
            if not await registry.cancel(info.id):
                raise Refused(f"{said}: it has finished, nothing is left to cancel")
        elif action == "delete":
            if not await registry.purge(info.queue, info.state, [info.id]):
                raise Refused(f"job {info.id} changed state as it was deleted: reload the page")
        else:
            raise ValueError(f"no job action {action!r}")
    elif kind == "queues" and target in registry.queues:
        if action == "pause":
            await registry.pause(target)
        elif action == "resume":
            await registry.resume(target)
        elif action == "retry-failed":
            await registry.retry_failed(target)
        elif action == "purge-failed":
            await registry.purge(target, JobState.FAILED)
        else:
            raise ValueError(f"no queue action {action!r}")
    else:
        raise Refused(f"no {kind.removesuffix('s')} called {target!r}", 404)


def _not_retried(said: str, info: JobInfo) -> str:
    """Why `retry_failed` left this job as it was."""
    if info.state is JobState.FAILED and info.unique is not None:
        return (
            f"{said}, and an unfinished job of its name holds its unique key {info.unique!r}:"
            " retry it once that job has finished"
        )
    return f"{said}, not failed: only a failed job can be retried"
