"""A job's metrics: its series, one series (whole or downsampled), every point as CSV or JSON lines, and points
reported over HTTP (a job's processes usually use ``corral.runtime.report`` instead)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

from corral.client.http import ClientBase
from corral.core.models import MAX_REPORTED_POINTS, MetricPoints, MetricReport, MetricsAccepted, MetricSeries


class MetricsMixin(ClientBase):
    def job_metrics(
        self, name: str, *, experiment: str | None = None, workspace: str | None = None
    ) -> list[MetricSeries]:
        """The job's series (per attempt, rank and name) with their last value, minimum and maximum."""
        found = self._request("GET", self._job(name, experiment, workspace) + "/metrics").json()
        return [MetricSeries.model_validate(s) for s in found]

    def job_metric(
        self,
        name: str,
        metric: str,
        *,
        rank: int = 0,
        attempt: int | None = None,
        max_points: int = 1000,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> MetricPoints:
        """A rank's series of ``metric`` (of the latest attempt that has it, or ``attempt``); past ``max_points``
        points, downsampled into that many buckets (each with its mean, minimum and maximum)."""
        params: dict[str, Any] = {"rank": rank, "max_points": max_points}
        if attempt is not None:
            params["attempt"] = attempt
        path = f"{self._job(name, experiment, workspace)}/metrics/{quote(metric)}"
        return MetricPoints.model_validate(self._request("GET", path, params=params).json())

    def export_metric(
        self,
        name: str,
        metric: str,
        *,
        format: str = "csv",
        attempt: int | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> Iterator[bytes]:
        """Every point of ``metric`` (every rank) at full resolution, as CSV or JSON lines, in chunks."""
        params: dict[str, Any] = {"format": format}
        if attempt is not None:
            params["attempt"] = attempt
        path = f"{self._job(name, experiment, workspace)}/metrics/{quote(metric)}"
        yield from self._stream(path, params)

    def report_metrics(
        self,
        name: str,
        points: Iterable[MetricReport | dict[str, Any]],
        *,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> MetricsAccepted:
        """Store points of the job's running attempt (sent :data:`MAX_REPORTED_POINTS` a request); ``stop`` says
        the job is being stopped."""
        path = self._job(name, experiment, workspace) + "/metrics"
        batch: list[dict[str, Any]] = []
        accepted, stop = 0, False

        def send() -> None:
            nonlocal accepted, stop
            answer = MetricsAccepted.model_validate(self._request("POST", path, json={"points": batch}).json())
            accepted, stop = accepted + answer.accepted, stop or answer.stop
            batch.clear()

        for point in points:
            batch.append(point.model_dump(exclude_none=True) if isinstance(point, MetricReport) else dict(point))
            if len(batch) == MAX_REPORTED_POINTS:
                send()
        if batch:
            send()
        return MetricsAccepted(accepted=accepted, stop=stop)
