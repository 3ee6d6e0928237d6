"""Where the scheduler is: a Durable Task Scheduler (``https://...``, managed identity or any
azure-identity credential, through azrun's process-scoped identity) or a local scheduler
(``host:port``, plain gRPC: :mod:`azrun.durable._local`, tests and development)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azrun.errors import ConfigError

if TYPE_CHECKING:
    from azrun.clients import ClientFactory
    from azrun.config import Settings

__all__ = ["SchedulerConnection"]


@dataclass(frozen=True, slots=True)
class SchedulerConnection:
    """``endpoint``: ``https://<scheduler>.durabletask.io`` (with ``taskhub``) or ``host:port``."""

    endpoint: str
    taskhub: str = "default"

    @classmethod
    def from_settings(cls, settings: Settings, endpoint: str | None = None, taskhub: str | None = None) -> SchedulerConnection:
        chosen = endpoint or settings.get("durable_endpoint")
        if not chosen:
            raise ConfigError(
                "no durable scheduler: durable runs need one",
                hint="pass --scheduler https://<name>.<region>.durabletask.io (or host:port of "
                "`azrun durable scheduler`), or set AZRUN_DURABLE_ENDPOINT",
            )
        return cls(str(chosen).rstrip("/"), str(taskhub or settings.get("durable_taskhub") or "default"))

    @property
    def managed(self) -> bool:
        """Azure Durable Task Scheduler (TLS + token) rather than a local plain-gRPC scheduler."""
        return self.endpoint.startswith(("https://", "http://"))

    def describe(self) -> str:
        return f"{self.endpoint} (task hub {self.taskhub})" if self.managed else self.endpoint

    def client(self, factory: ClientFactory | None = None) -> Any:
        """A ``TaskHubGrpcClient`` (sync) for this scheduler."""
        if self.managed:
            from durabletask.azuremanaged.client import DurableTaskSchedulerClient

            return DurableTaskSchedulerClient(
                host_address=self.endpoint, taskhub=self.taskhub, token_credential=_credential(factory),
                secure_channel=self.endpoint.startswith("https://"),
            )  # fmt: skip
        from durabletask.client import TaskHubGrpcClient

        return TaskHubGrpcClient(host_address=self.endpoint)

    def worker(self, factory: ClientFactory | None, **kwargs: Any) -> Any:
        """A ``TaskHubGrpcWorker`` for this scheduler (``kwargs``: concurrency options...)."""
        if self.managed:
            from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

            return DurableTaskSchedulerWorker(
                host_address=self.endpoint, taskhub=self.taskhub, token_credential=_credential(factory),
                secure_channel=self.endpoint.startswith("https://"), **kwargs,
            )  # fmt: skip
        from durabletask.worker import TaskHubGrpcWorker

        return TaskHubGrpcWorker(host_address=self.endpoint, **kwargs)


def _credential(factory: ClientFactory | None) -> Any:
    if factory is None:
        return None
    return factory.credential()
