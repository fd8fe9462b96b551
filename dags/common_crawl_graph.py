"""Inter-firm hyperlink networks from Common Crawl (docs/pipeline.md).

One mapped task group per (crawl, domain) pair runs nodes -> edges -> graph -> graph_aggr,
each step on `engines[step]` or else `engine`. Manual runs (trigger form, `airflow dags test`,
REST API) process the `crawls` param; scheduled and backfill runs process the crawls published
in their data interval, from `dags/data/crawls.csv` (the schedule is one run per release date),
and do not use the `crawls` param. Conf keys that are not params are refused by `plan`.

Run state: `cost_report` runs whatever happened (trigger rule all_done) and lists every task
with its state; `check_run`, the only leaf, then fails the DAG run when any planned task did not
succeed (failed, upstream_failed, skipped by hand...), naming those tasks and their partitions.
So a run is green only when every step of every (crawl, domain) pair wrote its partition.

With no conf at all every param points at the bundled sample data and a local output folder.
A deployment changes the defaults with environment variables, never by editing this file:
CC_GRAPH_CC_ROOT, CC_GRAPH_SEEDS_ROOT, CC_GRAPH_OUTPUT_ROOT, CC_GRAPH_ENGINE, and the Airflow
pools the Spark steps run in: CC_GRAPH_POOL (all steps) or CC_GRAPH_POOL_<STEP> (one step).

This file imports neither pyspark nor any cloud SDK: it is parsed often.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
from pathlib import Path

import pendulum

from airflow.sdk import DAG, Asset, Param, task, task_group
from airflow_spark_portable.engines import ENGINE_NAMES
from airflow_spark_portable.operators.spark_portable import SparkPortableOperator, is_absolute_location

# The core class, not airflow.sdk's: in Airflow 3.3.2 the SDK EventsTimetable fails to
# serialize (the scheduler side expects a "_summary" key it does not write).
from airflow.timetables.events import EventsTimetable

DAG_ID = "common_crawl_graph"
STEPS = ("nodes", "edges", "graph", "graph_aggr")
CRAWL_ID = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")
ROOT_PARAMS = ("cc_root", "seeds_root", "output_root")
PARAM_DEFAULT_CRAWLS = ("CC-MAIN-2024-10", "CC-MAIN-2024-18")
BUNDLE_ROOT = Path(__file__).resolve().parent.parent
CRAWL_LIST = Path(__file__).resolve().parent / "data" / "crawls.csv"


def load_crawl_list(path: Path = CRAWL_LIST) -> dict[str, dt.date]:
    """crawl id -> release date, from the shipped CSV (comment lines start with #)."""
    with open(path, encoding="utf-8") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        releases = {row["crawl"].strip(): dt.date.fromisoformat(row["release_date"].strip()) for row in rows}
    bad = [c for c in releases if not CRAWL_ID.match(c)]
    if bad:
        raise ValueError(f"{path}: malformed crawl ids {bad}")
    return releases


def crawls_released(releases: dict[str, dt.date], start: dt.datetime, end: dt.datetime) -> list[str]:
    """Crawls published within [start, end] (dates, inclusive), in release order."""
    first, last = start.date(), end.date()
    return sorted((c for c, day in releases.items() if first <= day <= last), key=lambda c: (releases[c], c))


def plan_pairs(
    params: dict, crawls: list[str], max_map_length: int, seeds_must_exist: bool = True
) -> list[dict[str, str]]:
    """Validate the run's params and return one dict per (crawl, domain) pair, carrying the
    engine of each step. Every error names the param and what to change."""
    bad = [c for c in crawls if not isinstance(c, str) or not CRAWL_ID.match(c)]
    if bad:
        raise ValueError(f"param 'crawls': {bad} are not crawl ids like CC-MAIN-2024-10")
    domains = params["domains"]
    if not domains:
        raise ValueError("param 'domains' is empty: name at least one research domain")
    engine = params["engine"]
    if engine not in ENGINE_NAMES:
        raise ValueError(f"param 'engine' = {engine!r}: use one of {', '.join(ENGINE_NAMES)}")
    engines = params.get("engines") or {}
    for step, value in engines.items():
        if step not in STEPS:
            raise ValueError(f"param 'engines': unknown step {step!r}; steps are {', '.join(STEPS)}")
        if value not in ENGINE_NAMES:
            raise ValueError(f"param 'engines': {step} = {value!r}; use one of {', '.join(ENGINE_NAMES)}")
    for name in ROOT_PARAMS:
        root = str(params[name])
        if not is_absolute_location(root):  # the operator's rule: dbfs:/ and s3:// are fine
            raise ValueError(
                f"param {name!r} = {root!r} is a relative path (relative to what the worker happens to run "
                "in): give an absolute folder or a URI such as s3://bucket/prefix"
            )
    seeds_root = str(params["seeds_root"])
    if seeds_must_exist and "://" not in seeds_root:
        missing = [d for d in domains if not (Path(seeds_root) / f"{d}.csv").is_file()]
        if missing:
            raise ValueError(
                f"param 'domains': no seed list for {missing} in seeds_root {seeds_root} "
                f"(expected {{domain}}.csv); fix the domain name or add the file"
            )
    pairs = [{"crawl": c, "domain": d} for c in dict.fromkeys(crawls) for d in dict.fromkeys(domains)]
    if len(pairs) > max_map_length:
        raise ValueError(
            f"{len(crawls)} crawls x {len(domains)} domains = {len(pairs)} task groups, more than "
            f"[core] max_map_length = {max_map_length}: split the run, or raise "
            "AIRFLOW__CORE__MAX_MAP_LENGTH"
        )
    for pair in pairs:
        pair.update({f"{step}_engine": engines.get(step, engine) for step in STEPS})
    return pairs


def check_conf_keys(conf: dict, params: dict) -> None:
    """A conf key that is no param would be ignored without a word (a typo such as
    ``crawl`` for ``crawls`` would run the default crawls): refuse it."""
    unknown = sorted(set(conf or {}) - set(params))
    if unknown:
        raise ValueError(
            f"unknown conf key(s) {unknown}: this DAG's params are {', '.join(sorted(params))}; "
            "fix the spelling or remove the key"
        )


def run_crawls(run_type: str, params: dict, conf: dict, releases: dict[str, dt.date], start, end) -> list[str]:
    """The crawls a run processes: manual runs take the ``crawls`` param; scheduled and backfill
    runs take the crawls released in their data interval, and refuse a ``crawls`` conf that
    asks for something else (it would be ignored)."""
    if run_type not in ("scheduled", "backfill"):
        return list(params["crawls"])
    crawls = crawls_released(releases, start, end)
    asked = (conf or {}).get("crawls")
    if asked is not None and list(asked) != list(PARAM_DEFAULT_CRAWLS) and list(asked) != crawls:
        raise ValueError(
            f"param 'crawls' = {list(asked)} is not used by {run_type} runs: they process the crawls "
            f"released in their data interval ({start} .. {end}: {crawls or 'none'}); remove 'crawls' from the "
            "conf, or trigger a manual run for those crawls"
        )
    return crawls


def run_task_states(ti, dag, run_id: str) -> dict[str, str]:
    """``{task label: state}`` for every task instance of this run that has finished, but the
    caller's own (labels as in the cost report: ``plan``, ``pair.edges[1]``)."""
    from airflow_spark_portable.report import task_label

    raw = ti.get_task_states(dag_id=dag.dag_id, run_ids=[run_id]).get(run_id, {})
    task_ids = set(dag.task_ids)
    states = {}
    for key, state in raw.items():  # the API names mapped instances "<task_id>_<map_index>"
        task_id, _, index = key.rpartition("_")
        if key in task_ids or not (task_id in task_ids and index.isdigit()):
            label = key
        else:
            label = task_label(task_id, int(index))
        if key != ti.task_id and state is not None:  # None: downstream of the caller, not run yet
            states[label] = str(getattr(state, "value", state))
    return states


def run_problems(states: dict[str, str], pairs: list[dict]) -> list[str]:
    """Every task that did not succeed, with its (crawl, domain). A run whose plan has no
    pair (a scheduled interval without a crawl release) skips the pair tasks: that is fine."""
    from airflow_spark_portable.report import not_succeeded, task_label

    partitions = {
        task_label(f"pair.{step}", index): f"{pair['crawl']} / {pair['domain']}"
        for step in STEPS
        for index, pair in enumerate(pairs)
    }
    return not_succeeded(states, partitions, skipped_ok=not pairs and states.get("plan") == "success")


def _default(env: str, fallback: Path | str) -> str:
    return os.environ.get(env) or str(fallback)


def _root_param(env: str, fallback: Path, description: str) -> Param:
    """A folder-or-URI param whose default a deployment sets through ``env``."""
    return Param(_default(env, fallback), type="string", minLength=1, description=description)


_RELEASES = load_crawl_list()

with DAG(
    dag_id=DAG_ID,
    description="Inter-firm hyperlink networks from Common Crawl WAT files",
    schedule=EventsTimetable(
        event_dates=[pendulum.datetime(d.year, d.month, d.day, tz="UTC") for d in _RELEASES.values()],
        description="Common Crawl releases (dags/data/crawls.csv)",
    ),
    start_date=pendulum.datetime(2023, 1, 1, tz="UTC"),
    catchup=False,  # history is processed by explicit backfills, not on first deploy
    max_active_runs=2,
    render_template_as_native_obj=True,  # max_files_per_crawl reaches the job as int / None
    tags=["common-crawl", "spark-portable"],
    doc_md=__doc__,
    params={
        "crawls": Param(
            list(PARAM_DEFAULT_CRAWLS),
            type="array",
            items={"type": "string", "pattern": CRAWL_ID.pattern},
            minItems=1,
            description="Crawl ids such as CC-MAIN-2024-10, for manual runs. Scheduled and backfill runs do not "
            "use it: they process the crawls released in their data interval (dags/data/crawls.csv).",
        ),
        "domains": Param(
            ["steel", "pharma"],
            type="array",
            items={"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
            minItems=1,
            description="Research domains; each names a seed list {seeds_root}/{domain}.csv (company_id,url).",
        ),
        "engine": Param(
            _default("CC_GRAPH_ENGINE", "local"), enum=list(ENGINE_NAMES), description="Default engine for every step."
        ),
        "engines": Param(
            {},
            type="object",
            properties={step: {"type": "string", "enum": list(ENGINE_NAMES)} for step in STEPS},
            additionalProperties=False,
            description='Per-step engine override, e.g. {"edges": "emr", "graph": "databricks"}.',
        ),
        "cc_root": _root_param(
            "CC_GRAPH_CC_ROOT",
            BUNDLE_ROOT / "sample_data" / "cc",
            "Common Crawl root: s3://commoncrawl/, https://data.commoncrawl.org/ or a local mirror.",
        ),
        "seeds_root": _root_param(
            "CC_GRAPH_SEEDS_ROOT",
            BUNDLE_ROOT / "sample_data" / "seeds",
            "Folder or URI holding {domain}.csv seed lists.",
        ),
        "output_root": _root_param(
            "CC_GRAPH_OUTPUT_ROOT",
            BUNDLE_ROOT / "var" / "output",
            "Folder or URI receiving {step}/crawl=.../domain=.../ Parquet outputs.",
        ),
        "max_files_per_crawl": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Read only the first N WAT files of each crawl (sampling); empty = all.",
        ),
        "max_failed_files": Param(
            0,
            type="integer",
            minimum=0,
            description="How many listed WAT files may fail (unreadable or partial, after retries) before the edges "
            "step fails. 0 (safe): a partition is written only from every listed file. A partition written from "
            "fewer files names the failed ones in its metrics (files_failed, failed_files).",
        ),
    },
):

    @task
    def plan(**context) -> list[dict[str, str]]:
        """The (crawl, domain) pairs of this run, validated before any Spark work."""
        from airflow_spark_portable import settings

        dag_run = context["dag_run"]
        run_type = str(getattr(dag_run.run_type, "value", dag_run.run_type)).lower()
        params = context["params"]
        check_conf_keys(dag_run.conf, context["dag"].params)  # the declared ones: conf keys join params
        start = context.get("data_interval_start") or context.get("logical_date")
        end = context.get("data_interval_end") or context.get("logical_date")
        crawls = run_crawls(run_type, params, dag_run.conf, load_crawl_list(), start, end)
        if run_type in ("scheduled", "backfill"):
            print(
                f"{run_type} run for {start} .. {end}: processes the crawls released then: {crawls or 'none'} "
                "(the 'crawls' param is not used by scheduled and backfill runs)"
            )
        max_map_length = settings.airflow_conf().getint("core", "max_map_length", fallback=1024)
        return plan_pairs(params, crawls, max_map_length)

    @task_group(group_id="pair")
    def crawl_domain(crawl, domain, nodes_engine, edges_engine, graph_engine, graph_aggr_engine):
        engines = {"nodes": nodes_engine, "edges": edges_engine, "graph": graph_engine, "graph_aggr": graph_aggr_engine}
        previous = None
        for step in STEPS:
            current = SparkPortableOperator(
                task_id=step,
                application=f"jobs/{step}.py",
                engine=engines[step],
                crawl=crawl,
                domain=domain,
                inputs={"cc": "{{ params.cc_root }}", "seeds": "{{ params.seeds_root }}"},
                output_root="{{ params.output_root }}",
                extras={
                    "max_files_per_crawl": "{{ params.max_files_per_crawl }}",
                    "max_failed_files": "{{ params.max_failed_files }}",
                },
                # one asset per step; each event carries the (crawl, domain) partition it wrote.
                # An "x-" scheme: Airflow then skips provider URI normalisers, whose discovery
                # imports boto3 (through the amazon provider) on every parse.
                outlets=[Asset(name=f"{DAG_ID}.{step}", uri=f"x-cc-graph://{step}", group=DAG_ID)],
                # caps how many steps run at once across all runs (clusters cost money);
                # see README "Concurrency"
                pool=os.environ.get(f"CC_GRAPH_POOL_{step.upper()}")
                or os.environ.get("CC_GRAPH_POOL")
                or "default_pool",
            )
            if previous is not None:
                previous >> current
            previous = current

    @task(trigger_rule="all_done")  # report what ran, also when a step failed
    def cost_report(**context) -> dict:
        """What each step cost, and the same run priced all-EMR and all-Databricks
        (airflow_spark_portable/report.py), with every task's state; files under
        {output_root}/_reports/<run id>/."""
        from airflow_spark_portable import report, settings
        from airflow_spark_portable.costs import PriceTable

        ti, params = context["ti"], context["params"]
        pairs = ti.xcom_pull(task_ids="plan") or []
        # explicit map indexes (one per planned pair): the same answer on every Airflow 3.x
        indexes = list(range(len(pairs)))
        metrics = {}
        for step in STEPS:
            values = ti.xcom_pull(task_ids=f"pair.{step}", map_indexes=indexes) if indexes else []
            for index, value in zip(indexes, values):
                if value is not None:  # a failed task has no result
                    metrics[report.task_label(f"pair.{step}", index)] = value
        states = run_task_states(ti, context["dag"], context["run_id"])
        result = report.build(metrics, PriceTable.load(), task_states=states, problems=run_problems(states, pairs))
        root = str(params["output_root"])
        safe_run = re.sub(r"[^A-Za-z0-9._=-]+", "_", context["run_id"])
        # a remote root, or a relative one plan refused: the report stays in the worker's work dir
        local = root.startswith("/")
        base = Path(root) if local else settings.work_dir() / "reports"
        paths = report.write(result, base / "_reports" / safe_run, f"{DAG_ID} {context['run_id']}", private=not local)
        print(report.to_markdown(result))
        print(f"Report: {paths['html']}")
        return {"totals": result["totals"], "tasks": result["tasks"], "problems": result["problems"], "files": paths}

    # the only leaf: Airflow takes the run's state from it; a retry could not change its verdict
    @task(trigger_rule="all_done", retries=0)
    def check_run(**context) -> None:
        """Fail the DAG run when any task of it did not succeed."""
        ti = context["ti"]
        states = run_task_states(ti, context["dag"], context["run_id"])
        problems = run_problems(states, ti.xcom_pull(task_ids="plan") or [])
        if problems:
            raise RuntimeError(
                f"{len(problems)} task(s) of this run did not succeed, so the run failed: " + "; ".join(problems)
            )
        print(f"all {len(states) - 1} tasks succeeded")

    crawl_domain.expand_kwargs(plan()) >> cost_report() >> check_run()
