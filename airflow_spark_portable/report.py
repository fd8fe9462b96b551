"""Cost and run report of a DAG run: what each step cost, and what the run would have cost on
each other engine.

Input: every SparkPortableOperator task's metrics (its XCom ``return_value``), whose
``spark_portable`` entry carries the engine, wall time, partition and cost estimate
(``costs.py``). Output: a table per step and engine, totals, and a chart (``report.html``,
inline SVG), plus ``report.md`` and ``report.json``.

What-if model: each task's measured compute (its instances, markets and hours; for a local
task, its core-hours as node-hours of ``costs.REFERENCE_NODE``) is priced on every platform
from the same price table: EMR = EC2 + the EMR fee; Databricks = EC2 + DBUs x the jobs-compute
DBU price. Same instances, same hours: differences in cluster start-up time or engine speed
(e.g. Photon) between platforms are not modelled, so the what-if isolates the platform fee.

    python -m airflow_spark_portable.report --dag-id common_crawl_graph --run-id <run id> --out DIR
"""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_spark_portable.costs import PriceTable, usage_for_pricing

PLATFORMS = ("emr", "databricks")
_ZERO = {"infrastructure": 0.0, "platform": 0.0, "total": 0.0}


def _add(into: dict[str, float], cost: Mapping[str, Any]) -> None:
    for key in _ZERO:
        into[key] = round(into[key] + float(cost.get(key, 0.0)), 6)


def task_label(task_id: str, map_index: int) -> str:
    """How the report names a task instance: ``plan``, ``pair.edges[1]``."""
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


def not_succeeded(states: Mapping[str, str], partitions: Mapping[str, str] | None = None, skipped_ok: bool = False) -> list[str]:
    """``"label (partition): state"`` for every task instance that did not succeed."""
    fine = {"success", "removed"} | ({"skipped"} if skipped_ok else set())
    partitions = partitions or {}
    return [
        f"{label}{f' ({partitions[label]})' if label in partitions else ''}: {state}"
        for label, state in sorted(states.items())
        if state not in fine
    ]


def build(
    task_metrics: Mapping[str, Mapping[str, Any]],
    table: PriceTable,
    region: str = "us-east-1",
    task_states: Mapping[str, str] | None = None,
    problems: list[str] | None = None,
) -> dict[str, Any]:
    """The report of one DAG run from ``{task label: metrics}``, with every task's state
    (``{task label: state}``) and the tasks that did not succeed, when known."""
    steps: dict[tuple[str, str], dict[str, Any]] = {}
    totals = {"actual": dict(_ZERO), **{p: dict(_ZERO) for p in PLATFORMS}}
    unpriced: dict[str, float] = {}
    tasks = 0
    for label, metrics in sorted(task_metrics.items()):
        run = (metrics or {}).get("spark_portable") if isinstance(metrics, Mapping) else None
        if not isinstance(run, Mapping):
            continue  # not a SparkPortableOperator result (or the task failed)
        tasks += 1
        step = label.split("[")[0].rsplit(".", 1)[-1]
        engine = run.get("engine", "?")
        cost = run.get("cost") or {}
        row = steps.setdefault(
            (step, engine),
            {"step": step, "engine": engine, "tasks": 0, "wall_seconds": 0.0, "actual": dict(_ZERO)}
            | {p: dict(_ZERO) for p in PLATFORMS},
        )
        row["tasks"] += 1
        row["wall_seconds"] = round(row["wall_seconds"] + float(run.get("wall_seconds", 0.0)), 3)
        _add(row["actual"], cost)
        _add(totals["actual"], cost)
        usage = usage_for_pricing(cost)
        where = cost.get("region") if cost.get("region") not in (None, "local") else region
        for platform in PLATFORMS:
            if platform == engine and engine != "local":
                priced = cost  # what it did cost, not a re-pricing
            elif platform == "emr":
                priced = table.emr_estimate(where, usage, "what-if")
            else:
                priced = table.databricks_estimate(where, usage, "what-if", "jobs")
            for instance_type, hours in (priced.get("unpriced") or {}).items():
                unpriced[instance_type] = round(unpriced.get(instance_type, 0.0) + hours, 4)
            _add(row[platform], priced)
            _add(totals[platform], priced)
    return {
        "tasks": tasks,
        "task_states": dict(sorted((task_states or {}).items())),
        "problems": list(problems or []),
        "steps": [steps[k] for k in sorted(steps)],
        "totals": totals,
        "currency": table.currency,
        "price_table": table.label,
        "region": region,
        "unpriced": unpriced,
        "model": "same measured compute priced per platform: EMR = EC2 + EMR fee, Databricks = EC2 + DBUs "
        "at the jobs-compute price; a local task's core-hours count as node-hours of m5.xlarge / 4",
    }


def _money(value: float) -> str:
    return f"{value:,.4f}" if value < 1 else f"{value:,.2f}"


def to_markdown(report: Mapping[str, Any]) -> str:
    cur = report["currency"]
    lines = [
        f"| step | engine | tasks | wall s | actual {cur} | all-EMR {cur} | all-Databricks {cur} |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["steps"]:
        lines.append(
            f"| {row['step']} | {row['engine']} | {row['tasks']} | {row['wall_seconds']:.1f} | "
            f"{_money(row['actual']['total'])} | {_money(row['emr']['total'])} | {_money(row['databricks']['total'])} |"
        )
    totals = report["totals"]
    lines.append(
        f"| **total** | | {report['tasks']} | | **{_money(totals['actual']['total'])}** | "
        f"**{_money(totals['emr']['total'])}** | **{_money(totals['databricks']['total'])}** |"
    )
    lines += ["", _headline(report)]
    if report.get("problems"):
        lines += ["", f"**{len(report['problems'])} task(s) did not succeed** (not priced):"]
        lines += [f"- {problem}" for problem in report["problems"]]
    if report.get("task_states"):
        lines += ["", "Task states: " + ", ".join(f"{t} {s}" for t, s in report["task_states"].items())]
    lines += ["", f"Model: {report['model']}. Prices: {report['price_table']}."]
    if report["unpriced"]:
        lines.append(f"Not priced (missing from the table): {report['unpriced']} hours.")
    return "\n".join(lines) + "\n"


def _headline(report: Mapping[str, Any]) -> str:
    totals, cur = report["totals"], report["currency"]
    return (
        f"This run cost {cur} {_money(totals['actual']['total'])}; all-EMR it would have cost "
        f"{cur} {_money(totals['emr']['total'])}, all-Databricks {cur} {_money(totals['databricks']['total'])}."
    )


def _chart(report: Mapping[str, Any]) -> str:
    """Stacked bars, infrastructure and platform fee, for this run and each all-X what-if."""
    bars = [("this run", report["totals"]["actual"]), ("all EMR", report["totals"]["emr"])]
    bars.append(("all Databricks", report["totals"]["databricks"]))
    top = max((b["total"] for _, b in bars), default=0.0) or 1.0
    width, height, left, bar_w, gap = 520, 260, 70, 90, 50
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 60}" role="img">']
    parts.append(f'<line x1="{left}" y1="{height}" x2="{width - 10}" y2="{height}" stroke="#333"/>')
    for i, (name, cost) in enumerate(bars):
        x = left + gap / 2 + i * (bar_w + gap)
        infra_h = cost["infrastructure"] / top * (height - 30)
        fee_h = cost["platform"] / top * (height - 30)
        parts.append(f'<rect x="{x}" y="{height - infra_h}" width="{bar_w}" height="{infra_h}" fill="#4e79a7"/>')
        parts.append(f'<rect x="{x}" y="{height - infra_h - fee_h}" width="{bar_w}" height="{fee_h}" fill="#f28e2b"/>')
        parts.append(
            f'<text x="{x + bar_w / 2}" y="{height - infra_h - fee_h - 6}" text-anchor="middle" font-size="13">'
            f"{html.escape(report['currency'])} {_money(cost['total'])}</text>"
        )
        parts.append(f'<text x="{x + bar_w / 2}" y="{height + 18}" text-anchor="middle" font-size="13">{name}</text>')
    parts.append(f'<rect x="{left}" y="{height + 32}" width="12" height="12" fill="#4e79a7"/>')
    parts.append(f'<text x="{left + 18}" y="{height + 43}" font-size="12">infrastructure (EC2)</text>')
    parts.append(f'<rect x="{left + 170}" y="{height + 32}" width="12" height="12" fill="#f28e2b"/>')
    parts.append(f'<text x="{left + 188}" y="{height + 43}" font-size="12">platform fee (EMR / DBUs)</text>')
    parts.append("</svg>")
    return "".join(parts)


def to_html(report: Mapping[str, Any], title: str) -> str:
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells) + "</tr>"
        for cells in (
            (
                r["step"],
                r["engine"],
                r["tasks"],
                f"{r['wall_seconds']:.1f}",
                _money(r["actual"]["total"]),
                _money(r["emr"]["total"]),
                _money(r["databricks"]["total"]),
            )
            for r in report["steps"]
        )
    )
    cur = html.escape(report["currency"])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,td:nth-child(2){text-align:left}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p><strong>{html.escape(_headline(report))}</strong></p>{_chart(report)}"
        f"<table><tr><th>step</th><th>engine</th><th>tasks</th><th>wall s</th><th>actual {cur}</th>"
        f"<th>all-EMR {cur}</th><th>all-Databricks {cur}</th></tr>{rows}</table>{_states_html(report)}"
        f"<p>Model: {html.escape(report['model'])}. Prices: {html.escape(report['price_table'])}.</p>"
        "</body></html>"
    )


def _states_html(report: Mapping[str, Any]) -> str:
    problems = report.get("problems") or []
    parts = []
    if problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
        parts.append(f"<h2>{len(problems)} task(s) did not succeed (not priced)</h2><ul>{items}</ul>")
    states = report.get("task_states") or {}
    if states:
        rows = "".join(f"<tr><td>{html.escape(t)}</td><td>{html.escape(s)}</td></tr>" for t, s in states.items())
        parts.append(f"<h2>Tasks</h2><table><tr><th>task</th><th>state</th></tr>{rows}</table>")
    return "".join(parts)


def write(report: Mapping[str, Any], folder: Path, title: str, private: bool = False) -> dict[str, str]:
    """report.json, .md and .html in ``folder``; ``private``: owner-only (the worker's work dir
    is, since other files there hold conf and tokens)."""
    from airflow_spark_portable.runtime.transport import private_dir, write_private

    if private:
        private_dir(folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "report.json", "markdown": folder / "report.md", "html": folder / "report.html"}
    for kind, path in paths.items():
        text = {"json": lambda: json.dumps(report, indent=2), "markdown": lambda: to_markdown(report)}.get(
            kind, lambda: to_html(report, title)
        )()
        if private:
            write_private(path, text)  # written aside and renamed, like below
            continue
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # a reader never sees half a report
    return {kind: str(path) for kind, path in paths.items()}


def run_from_db(dag_id: str, run_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Every task's return value and state in one DAG run, from Airflow's metadata database."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_id, run_id=run_id, key="return_value").all()
        metrics = {task_label(row.task_id, row.map_index): XComModel.deserialize_value(row) for row in rows}
        tis = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id).all()
        states = {task_label(ti.task_id, ti.map_index): str(getattr(ti.state, "value", ti.state)) for ti in tis}
    return metrics, states


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Cost report of one DAG run (needs Airflow's metadata DB).")
    parser.add_argument("--dag-id", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for report.html, report.md, report.json")
    parser.add_argument("--region", default="us-east-1", help="AWS region for pricing local work (what-if)")
    args = parser.parse_args(argv)
    metrics, states = run_from_db(args.dag_id, args.run_id)
    if not states:
        raise SystemExit(f"no task instances for dag {args.dag_id!r} run {args.run_id!r}: check both ids")
    problems = not_succeeded(states, skipped_ok=True)  # a report, not a judge: skips are the DAG's to judge
    report = build(metrics, PriceTable.load(), args.region, task_states=states, problems=problems)
    paths = write(report, args.out, f"{args.dag_id} {args.run_id}")
    print(to_markdown(report))
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))


if __name__ == "__main__":
    main()
