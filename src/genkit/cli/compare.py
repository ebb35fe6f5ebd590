"""``genkit compare SWEEP_DIR``: the runs of a sweep side by side, the local twin of W&B's run table.

Each job folder of a Hydra multirun (``<sweep>/<n>/``) holds the overrides it ran with
(``.hydra/overrides.yaml``) and, when it finished, ``metrics.json``. The table shows the
overrides that differ between jobs and the final metrics, sorted by the objective; jobs
without results are listed as failed (or unfinished) at the end.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING, OmegaConf

from genkit.checkpoint import upgrade_config
from genkit.cli.app import override_key
from genkit.errors import UsageError

#: Metrics shown beside the objective, when present.
METRICS = ("test/nelbo", "test/rec", "test/kl", "test/iwae", "test/bpd", "test/active_units")


@dataclass
class CompareOptions:
    """genkit compare SWEEP_DIR [sort=METRIC] [csv=FILE] [markdown=FILE]"""

    path: str = MISSING  # a multirun folder (outputs/multirun/<date_time>)
    sort: str = ""  # the metric to sort by, lowest first; default: the objective the jobs optimised
    csv: str = ""  # also write the table as CSV
    markdown: str = ""  # also write the table as Markdown


@dataclass
class Job:
    """One job folder: what it ran with and what it reached (no metrics: it did not finish)."""

    name: str
    overrides: dict[str, str]
    metrics: dict[str, float] | None
    objective: str | None = None


def read_jobs(sweep: Path) -> list[Job]:
    """The job folders of ``sweep`` that Hydra started.

    Raises:
        UsageError: ``sweep`` is not a folder or holds no Hydra job.
    """
    if not sweep.is_dir():
        raise UsageError(f"path={sweep}: there is no such folder; give a multirun folder (outputs/multirun/...)")
    jobs = []
    for folder in sorted((p for p in sweep.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()), key=job_order):
        recorded = map(str, OmegaConf.load(folder / ".hydra" / "overrides.yaml"))
        overrides = {override_key(o): o.split("=", 1)[1] for o in recorded if "=" in o}
        results = folder / "metrics.json"
        if results.is_file():
            finished = json.loads(results.read_text())
            objective = upgrade_config(finished.get("config", {"model": {}})).get("objective")
            jobs.append(Job(folder.name, overrides, finished["metrics"], objective))
        else:
            jobs.append(Job(folder.name, overrides, None))
    if not jobs:
        raise UsageError(
            f"path={sweep}: no Hydra job folders (<n>/.hydra/overrides.yaml) in it; is it a multirun folder?"
        )
    return jobs


def job_order(folder: Path) -> tuple[int, int | str]:
    """Numbered job folders in numeric order (2 before 10), then any others by name."""
    return (0, int(folder.name)) if folder.name.isdigit() else (1, folder.name)


def table(jobs: list[Job], sort: str = "") -> tuple[list[str], list[list[str]]]:
    """Header and rows: job, the differing overrides, status, metrics; finished jobs by ``sort``
    (default: the objective the jobs optimised)."""
    keys = sorted({k for job in jobs for k in job.overrides})
    varying = [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1 and k != "resume"]
    finished = [job for job in jobs if job.metrics is not None]
    sort = sort or next((job.objective for job in finished if job.objective), "")
    present = [m for m in METRICS if any(job.metrics and m in job.metrics for job in jobs)]
    if sort not in present and any(sort in job.metrics for job in finished):
        present.insert(0, sort)
    if finished and not any(sort in job.metrics for job in finished):
        raise UsageError(
            f"sort={sort}: no job logged that metric; choose one of {', '.join(sorted(finished[0].metrics))}"
        )
    finished.sort(key=lambda job: job.metrics.get(sort, math.inf))
    rows = []
    for job in finished + [job for job in jobs if job.metrics is None]:
        status = "finished" if job.metrics is not None else "failed or unfinished"
        values = [f"{job.metrics[m]:.4f}" if job.metrics and m in job.metrics else "" for m in present]
        rows.append([job.name, *(job.overrides.get(k, "") for k in varying), status, *values])
    return ["job", *varying, "status", *present], rows


def as_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join(lines) + "\n"


def as_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def as_csv(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    return buffer.getvalue()


def run(options: CompareOptions) -> str:
    """The table as text; also written as CSV/Markdown when asked."""
    header, rows = table(read_jobs(Path(options.path).expanduser()), options.sort)
    if options.csv:
        Path(options.csv).write_text(as_csv(header, rows))
    if options.markdown:
        Path(options.markdown).write_text(as_markdown(header, rows))
    return as_text(header, rows)
