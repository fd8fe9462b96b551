"""The common_crawl_graph DAG: integrity, params, per-step engines, release-driven backfills,
and (slow) the whole sample pipeline through Airflow's own dag.test()."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import AIRFLOW_BIN, ROOT, cli_json

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0
    from airflow.models.dagbag import DagBag

DAG_FILE = ROOT / "dags" / "common_crawl_graph.py"
SAMPLE = ROOT / "sample_data"


@pytest.fixture(scope="module")
def module():
    spec = importlib.util.spec_from_file_location("common_crawl_graph_dag", DAG_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def dag():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    ours = [w for w in caught if str(ROOT / "dags") in str(w.filename) or "airflow_spark_portable" in str(w.filename)]
    assert ours == [], [str(w.message) for w in ours]
    return bag.dags["common_crawl_graph"]


def test_dag_shape(dag):
    assert {t.task_id for t in dag.tasks} == {
        "plan", "pair.nodes", "pair.edges", "pair.graph", "pair.graph_aggr", "cost_report", "check_run",
    }
    report = dag.get_task("cost_report")
    assert report.upstream_task_ids == {"pair.graph_aggr"} and report.trigger_rule == "all_done"
    # the run's state is its leaves': check_run alone, which fails when any task did not succeed
    assert [t.task_id for t in dag.tasks if not t.downstream_task_ids] == ["check_run"]
    assert dag.get_task("check_run").upstream_task_ids == {"cost_report"}
    assert dag.get_task("check_run").trigger_rule == "all_done" and dag.get_task("check_run").retries == 0
    chain = ["pair.nodes", "pair.edges", "pair.graph", "pair.graph_aggr"]
    for upstream, downstream in zip(chain, chain[1:]):
        assert dag.get_task(downstream).upstream_task_ids == {upstream, "plan"}  # plan: the mapped pair
    assert dag.get_task("pair.nodes").upstream_task_ids == {"plan"}
    assert all(dag.get_task(t).application == f"jobs/{t.split('.')[1]}.py" for t in chain)


def test_parsing_the_bundle_imports_no_spark_and_no_cloud_sdk():
    """The DAG processor parses the bundle often: pyspark, boto3 and the Databricks SDK stay out
    (Airflow itself imports boto3 for any asset URI whose scheme a provider normalises)."""
    code = (
        "import sys\n"
        "from airflow.sdk import DAG\n"
        "try:\n    from airflow.dag_processing.dagbag import DagBag\n"
        "except ImportError:\n    from airflow.models.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags')!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'boto3', 'botocore', 'databricks')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_spark_steps_run_in_the_pools_the_deployment_names(monkeypatch):
    monkeypatch.setenv("CC_GRAPH_POOL", "spark_steps")
    monkeypatch.setenv("CC_GRAPH_POOL_EDGES", "edges_clusters")
    bag = DagBag(dag_folder=str(DAG_FILE))
    dag = bag.dags["common_crawl_graph"]
    pools = {t.task_id: t.pool for t in dag.tasks}
    assert pools == {
        "plan": "default_pool",
        "pair.nodes": "spark_steps",
        "pair.edges": "edges_clusters",
        "pair.graph": "spark_steps",
        "pair.graph_aggr": "spark_steps",
        "cost_report": "default_pool",
        "check_run": "default_pool",
    }


def test_defaults_point_at_the_bundled_sample(dag):
    params = dag.params.dump()
    assert params["cc_root"] == str(SAMPLE / "cc") and params["seeds_root"] == str(SAMPLE / "seeds")
    assert params["engine"] == "local" and params["engines"] == {} and params["max_files_per_crawl"] is None
    assert all((SAMPLE / "cc" / "crawl-data" / c / "wat.paths.gz").exists() for c in params["crawls"])


@pytest.mark.parametrize(
    ("conf", "param"),
    [
        ({"crawls": ["2024-10"]}, "crawls"),
        ({"crawls": []}, "crawls"),
        ({"domains": []}, "domains"),
        ({"engine": "spark"}, "engine"),
        ({"engines": {"edges": "spark"}}, "engines"),
        ({"engines": {"edgez": "emr"}}, "engines"),
        ({"max_files_per_crawl": 0}, "max_files_per_crawl"),
    ],
)
def test_trigger_form_rejects_bad_params(dag, conf, param):
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(dag.params)  # Airflow validates conf this way when a run is created
    with pytest.raises(Exception) as error:
        for key, value in conf.items():
            params[key] = value
        params.validate()
    assert param in str(error.value)


def _params(**over):
    base = {"domains": ["steel", "pharma"], "engine": "local", "engines": {}, "seeds_root": str(SAMPLE / "seeds"),
            "cc_root": str(SAMPLE / "cc"), "output_root": "/tmp/cc-graph-out"}
    return {**base, **over}


def test_each_step_gets_its_engine(module):
    pairs = module.plan_pairs(_params(engines={"edges": "emr", "graph": "databricks"}), ["CC-MAIN-2024-10"], 1024)
    assert [(p["crawl"], p["domain"]) for p in pairs] == [("CC-MAIN-2024-10", "steel"), ("CC-MAIN-2024-10", "pharma")]
    assert {(p["nodes_engine"], p["edges_engine"], p["graph_engine"], p["graph_aggr_engine"]) for p in pairs} == {
        ("local", "emr", "databricks", "local")
    }


@pytest.mark.parametrize(
    ("params", "crawls", "limit", "message"),
    [
        (_params(), ["CC-MAIN-24-10"], 1024, "param 'crawls'"),
        (_params(domains=["steel", "textiles"]), ["CC-MAIN-2024-10"], 1024, "param 'domains': no seed list for ['textiles']"),
        (_params(domains=[]), ["CC-MAIN-2024-10"], 1024, "param 'domains' is empty"),
        (_params(engine="spark"), ["CC-MAIN-2024-10"], 1024, "param 'engine' = 'spark'"),
        (_params(engines={"edges": "x"}), ["CC-MAIN-2024-10"], 1024, "param 'engines': edges = 'x'"),
        (_params(), ["CC-MAIN-2024-10", "CC-MAIN-2024-18"], 3, "= 4 task groups, more than [core] max_map_length = 3"),
    ],
)
def test_plan_fails_fast_naming_the_param(module, params, crawls, limit, message):
    with pytest.raises(ValueError) as error:
        module.plan_pairs(params, crawls, limit)
    assert message in str(error.value)


@pytest.mark.parametrize("root", ["cc_root", "seeds_root", "output_root"])
def test_plan_refuses_relative_roots(module, root):
    params = _params(**{root: "var/out"})
    with pytest.raises(ValueError, match=rf"param '{root}' = 'var/out' is a relative path"):
        module.plan_pairs(params, ["CC-MAIN-2024-10"], 1024)


def test_plan_takes_the_uri_forms_the_operator_takes(module):
    params = _params(output_root="dbfs:/mnt/graph", cc_root="s3://commoncrawl/")
    assert module.plan_pairs(params, ["CC-MAIN-2024-10"], 1024)  # dbfs:/ has no "//" and is no relative path


def test_plan_refuses_conf_keys_that_are_not_params(module, dag):
    params = dag.params.dump()
    module.check_conf_keys({"crawls": ["CC-MAIN-2024-10"], "max_failed_files": 1}, params)
    with pytest.raises(ValueError) as error:
        module.check_conf_keys({"crawl": ["CC-MAIN-2099-01"]}, params)
    assert "unknown conf key(s) ['crawl']" in str(error.value) and "crawls" in str(error.value)


def test_scheduled_and_backfill_runs_take_their_interval_not_the_crawls_param(module):
    releases = module.load_crawl_list()
    day = dt.datetime.combine(releases["CC-MAIN-2024-18"], dt.time(), tzinfo=dt.timezone.utc)
    params = {"crawls": ["CC-MAIN-2024-10"]}
    assert module.run_crawls("manual", params, {"crawls": ["CC-MAIN-2024-10"]}, releases, day, day) == [
        "CC-MAIN-2024-10"
    ]
    for run_type in ("scheduled", "backfill"):
        # no conf, or the form's default values: the interval decides
        assert module.run_crawls(run_type, params, {}, releases, day, day) == ["CC-MAIN-2024-18"]
        default = {"crawls": list(module.PARAM_DEFAULT_CRAWLS)}
        assert module.run_crawls(run_type, params, default, releases, day, day) == ["CC-MAIN-2024-18"]
        with pytest.raises(ValueError, match=f"param 'crawls' = \\['CC-MAIN-2023-50'\\] is not used by {run_type} runs"):
            module.run_crawls(run_type, params, {"crawls": ["CC-MAIN-2023-50"]}, releases, day, day)


def test_run_problems_name_every_task_that_did_not_succeed(module):
    pairs = [{"crawl": "CC-MAIN-2024-10", "domain": "steel"}, {"crawl": "CC-MAIN-2099-01", "domain": "steel"}]
    states = {"plan": "success", "pair.nodes[0]": "success", "pair.nodes[1]": "success",
              "pair.edges[0]": "success", "pair.edges[1]": "failed", "pair.graph[1]": "upstream_failed",
              "pair.graph_aggr[1]": "skipped", "cost_report": "success"}
    assert module.run_problems(states, pairs) == [
        "pair.edges[1] (CC-MAIN-2099-01 / steel): failed",
        "pair.graph[1] (CC-MAIN-2099-01 / steel): upstream_failed",
        "pair.graph_aggr[1] (CC-MAIN-2099-01 / steel): skipped",  # skipped by hand: not a green run
    ]
    # a scheduled interval without a release plans nothing: its pair tasks are skipped, rightly
    empty = {"plan": "success", "pair.nodes": "skipped", "pair.edges": "skipped", "cost_report": "success"}
    assert module.run_problems(empty, []) == []
    assert module.run_problems({**empty, "plan": "skipped"}, []) == [  # skipped by hand
        "pair.edges: skipped", "pair.nodes: skipped", "plan: skipped",
    ]
    assert module.run_problems({"plan": "failed", "pair.nodes": "upstream_failed"}, []) == [
        "pair.nodes: upstream_failed", "plan: failed",
    ]


def test_interval_selects_the_crawls_released_in_it(module):
    releases = module.load_crawl_list()
    assert len(releases) >= 20
    day = dt.datetime.combine(releases["CC-MAIN-2024-18"], dt.time(), tzinfo=dt.timezone.utc)
    assert module.crawls_released(releases, day, day) == ["CC-MAIN-2024-18"]
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    end = dt.datetime(2024, 12, 31, tzinfo=dt.timezone.utc)
    assert module.crawls_released(releases, start, end) == [c for c in releases if c.startswith("CC-MAIN-2024")]


def test_backfill_creates_one_run_per_crawl_released_in_the_range(module, tmp_path):
    # Airflow's own machinery: serialize the bundle, `airflow backfill create`, read the runs.
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }

    def airflow(*args):
        return subprocess.run([AIRFLOW_BIN, *args], env=env, capture_output=True, text=True, timeout=300, check=True)

    airflow("db", "migrate")
    airflow("dags", "reserialize")
    airflow("backfill", "create", "--dag-id", "common_crawl_graph", "--from-date", "2024-03-01", "--to-date", "2024-08-31")
    listing = airflow("dags", "list-runs", "common_crawl_graph", "--output", "json").stdout
    runs = cli_json(listing)
    logical = sorted(r["logical_date"][:10] for r in runs if r["run_id"].startswith("backfill__"))
    releases = module.load_crawl_list()
    expected = sorted(str(day) for day in releases.values() if dt.date(2024, 3, 1) <= day <= dt.date(2024, 8, 31))
    assert logical == expected and len(expected) == 6
    for day in logical:  # and each of those runs' interval selects exactly its crawl
        moment = dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc)
        (crawl,) = module.crawls_released(releases, moment, moment)
        assert str(releases[crawl]) == day


@pytest.mark.spark
@pytest.mark.timeout(1500)  # 16 cold spark-submits: ~5 min here
def test_dags_test_runs_the_whole_sample_pipeline(dag_runner, tmp_path):
    """`airflow dags test common_crawl_graph` with no conf: 2 crawls x 2 domains x 4 steps."""
    dags = dag_runner.home / "dags"
    shutil.copytree(ROOT / "dags" / "data", dags / "data", dirs_exist_ok=True)
    out = tmp_path / "out"
    env = {"CC_GRAPH_CC_ROOT": str(SAMPLE / "cc"), "CC_GRAPH_SEEDS_ROOT": str(SAMPLE / "seeds"),
           "CC_GRAPH_OUTPUT_ROOT": str(out)}
    os.environ.update(env)  # the deployment-style way to change the defaults
    try:
        outcome = dag_runner.run("common_crawl_graph", DAG_FILE.read_text(), timeout=1500)
    finally:
        for key in env:
            os.environ.pop(key)
    assert outcome.result.get("state") == "success", outcome.output[-5000:]
    tasks = outcome.result["tasks"]
    assert sum(1 for k, v in tasks.items() if k.startswith("pair.") and v == "success") == 16
    # the final report: 16 local tasks, zero cost, and the same work priced on EMR and Databricks
    assert tasks["cost_report[-1]"] == "success" and tasks["check_run[-1]"] == "success"
    summary = outcome.result["xcom"]["cost_report[-1]"]
    assert summary["problems"] == []
    assert summary["tasks"] == 16 and summary["totals"]["actual"]["total"] == 0
    emr, databricks = summary["totals"]["emr"], summary["totals"]["databricks"]
    assert 0 < emr["total"] < databricks["total"]
    assert emr["platform"] / emr["total"] == pytest.approx(0.2, abs=0.01)  # m5.xlarge: the EMR fee is 20%
    page = Path(summary["files"]["html"]).read_text()
    assert page.count("<rect") >= 6 and "all Databricks" in page and "This run cost USD 0.0000" in page
    table = Path(summary["files"]["markdown"]).read_text()
    assert all(f"| {step} | local | 4 |" in table for step in ("nodes", "edges", "graph", "graph_aggr"))
    # the same report from the command line, read back from Airflow's metadata database
    cli = subprocess.run(
        [sys.executable, "-m", "airflow_spark_portable.report", "--dag-id", "common_crawl_graph",
         "--run-id", outcome.result["run_id"], "--out", str(tmp_path / "cli-report")],
        capture_output=True, text=True, check=True,
    )
    assert "This run cost USD 0.0000" in cli.stdout
    again = json.loads((tmp_path / "cli-report" / "report.json").read_text())
    assert again["tasks"] == 16 and again["totals"] == summary["totals"]
    for step in ("nodes", "edges", "graph", "graph_aggr"):
        for crawl in ("CC-MAIN-2024-10", "CC-MAIN-2024-18"):
            for domain in ("steel", "pharma"):
                assert (out / step / f"crawl={crawl}" / f"domain={domain}" / "_SUCCESS").exists(), (step, crawl, domain)
    edges = [m for k, m in outcome.result["xcom"].items() if k.startswith("pair.edges")]
    assert len(edges) == 4 and all(m["rows"] > 0 and m["spark_portable"]["engine"] == "local" for m in edges)
    # every (crawl, domain, step) partition is an asset event with its partition attached
    events = {(e["asset"], e["extra"]["partition"]["crawl"], e["extra"]["partition"]["domain"])
              for e in outcome.result["asset_events"]}
    assert events == {(f"common_crawl_graph.{step}", c, d) for step in ("nodes", "edges", "graph", "graph_aggr")
                      for c in ("CC-MAIN-2024-10", "CC-MAIN-2024-18") for d in ("steel", "pharma")}


def _dag_test(dag_runner, conf, source=None, timeout=900):
    """`dag.test()` of the bundle's DAG file with ``conf``; the outcome and its cost report."""
    shutil.copytree(ROOT / "dags" / "data", dag_runner.home / "dags" / "data", dirs_exist_ok=True)
    outcome = dag_runner.run("common_crawl_graph", source or DAG_FILE.read_text(), conf=conf, timeout=timeout)
    reports = sorted(Path(conf["output_root"]).glob("_reports/*/report.json"))
    return outcome, json.loads(reports[-1].read_text()) if reports else None


def _sample_conf(out, **over):
    return {"cc_root": str(SAMPLE / "cc"), "seeds_root": str(SAMPLE / "seeds"), "output_root": str(out), **over}


def test_a_failed_plan_fails_the_run_and_the_report_names_it(dag_runner, tmp_path):
    outcome, report = _dag_test(dag_runner, _sample_conf(tmp_path / "out", domains=["textiles"]))
    tasks = outcome.result["tasks"]
    assert tasks["plan[-1]"] == "failed" and tasks["cost_report[-1]"] == "success", outcome.output[-3000:]
    assert tasks["check_run[-1]"] == "failed"
    assert outcome.result["state"] == "failed"
    assert "plan: failed" in report["problems"] and "pair.nodes: upstream_failed" in report["problems"]
    assert report["task_states"]["plan"] == "failed"
    markdown = (Path(report_folder := sorted((tmp_path / "out").glob("_reports/*"))[-1]) / "report.md").read_text()
    assert "did not succeed" in markdown and "- plan: failed" in markdown
    assert "plan: failed" in (report_folder / "report.html").read_text()


def test_a_relative_output_root_is_refused_and_nothing_is_written_relative_to_the_worker(dag_runner, work_dir):
    relative = "var/relative-root-test-out"
    outcome, _ = _dag_test(dag_runner, {"output_root": relative})
    assert outcome.result["tasks"]["plan[-1]"] == "failed" and outcome.result["state"] == "failed"
    assert "param 'output_root' = 'var/relative-root-test-out' is a relative path" in outcome.output
    assert not (ROOT / relative).exists() and not Path(relative).exists()
    reports = list((work_dir / "reports" / "_reports").glob("*/report.json"))
    assert any("plan: failed" in json.loads(r.read_text())["problems"] for r in reports)
    assert all(r.stat().st_mode & 0o077 == 0 for r in reports)  # the work dir is owner-only


def test_a_misspelt_conf_key_fails_the_plan(dag_runner, tmp_path):
    outcome, report = _dag_test(dag_runner, _sample_conf(tmp_path / "out", crawl=["CC-MAIN-2099-01"]))
    assert outcome.result["tasks"]["plan[-1]"] == "failed" and outcome.result["state"] == "failed"
    assert "unknown conf key(s) ['crawl']" in outcome.output


@pytest.mark.spark
def test_a_failed_step_and_its_upstream_failed_followers_fail_the_run(dag_runner, tmp_path):
    # CC-MAIN-2099-01 has no WAT listing: nodes succeeds, edges fails, graph and graph_aggr never run
    out = tmp_path / "out"
    outcome, report = _dag_test(dag_runner, _sample_conf(out, crawls=["CC-MAIN-2099-01"], domains=["steel"]))
    tasks = outcome.result["tasks"]
    assert tasks["pair.nodes[0]"] == "success" and tasks["pair.edges[0]"] == "failed", outcome.output[-3000:]
    assert tasks["pair.graph[0]"] == "upstream_failed" and tasks["pair.graph_aggr[0]"] == "upstream_failed"
    assert tasks["cost_report[-1]"] == "success" and tasks["check_run[-1]"] == "failed"
    assert outcome.result["state"] == "failed"
    assert report["problems"] == [
        "pair.edges[0] (CC-MAIN-2099-01 / steel): failed",
        "pair.graph[0] (CC-MAIN-2099-01 / steel): upstream_failed",
        "pair.graph_aggr[0] (CC-MAIN-2099-01 / steel): upstream_failed",
    ]
    assert report["tasks"] == 1  # the nodes task ran and is priced
    assert "3 task(s) of this run did not succeed" in outcome.output
    assert not (out / "edges" / "crawl=CC-MAIN-2099-01").exists()


def _rows(folder: Path) -> list[tuple]:
    import pyarrow.parquet as pq

    table = pq.read_table(folder)  # one partition folder (its _SUCCESS and hidden files are skipped)
    return sorted((tuple(row.values()) for row in table.to_pylist()), key=repr)  # repr: rows hold nulls


@pytest.mark.spark
@pytest.mark.timeout(1500)
def test_re_runs_on_the_warm_server_read_what_is_there_now(dag_runner, tmp_path):
    """The same DAG twice into one output root on the warm Spark Connect server, the seed list
    edited in between, gives exactly what a cold run (one spark-submit per step) gives."""
    seeds = tmp_path / "seeds"
    shutil.copytree(SAMPLE / "seeds", seeds)
    conf = {"crawls": ["CC-MAIN-2024-10"], "domains": ["steel"]}
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    first, _ = _dag_test(dag_runner, _sample_conf(warm, seeds_root=str(seeds), **conf), timeout=1200)
    assert first.result["state"] == "success", first.output[-3000:]
    # two more firms, whose pages are in the crawl (the pharma list's): nodes and edges change
    extra = (SAMPLE / "seeds" / "pharma.csv").read_text().splitlines()[1:3]
    with open(seeds / "steel.csv", "a", encoding="utf-8") as fh:
        fh.writelines(f"X{n},{line.split(',', 1)[1]}\n" for n, line in enumerate(extra))
    n_seeds = len((seeds / "steel.csv").read_text().splitlines()) - 1
    again, _ = _dag_test(dag_runner, _sample_conf(warm, seeds_root=str(seeds), **conf), timeout=1200)
    assert again.result["state"] == "success", again.output[-3000:]
    assert again.result["xcom"]["pair.nodes[0]"]["seeds"] == n_seeds
    submit = {"AIRFLOW__SPARK_PORTABLE__LOCAL_MODE": "submit"}
    shutil.copytree(ROOT / "dags" / "data", dag_runner.home / "dags" / "data", dirs_exist_ok=True)
    baseline = dag_runner.run("common_crawl_graph", DAG_FILE.read_text(), timeout=1200, env=submit,
                              conf=_sample_conf(cold, seeds_root=str(seeds), **conf))
    assert baseline.result["state"] == "success", baseline.output[-3000:]
    for step in ("nodes", "edges", "graph", "graph_aggr"):
        part = f"{step}/crawl=CC-MAIN-2024-10/domain=steel"
        assert _rows(warm / part) == _rows(cold / part), step
        assert again.result["xcom"][f"pair.{step}[0]"]["rows"] == len(_rows(cold / part))
    assert first.result["xcom"]["pair.edges[0]"]["rows"] < again.result["xcom"]["pair.edges[0]"]["rows"]


def _demo(tmp_path, *args, **env):
    """scripts/demo.sh as a user runs it, with its own Airflow home."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CC_GRAPH_"))}
    clean.update(AIRFLOW_HOME=str(tmp_path / "home"), CC_GRAPH_OUTPUT_ROOT=str(tmp_path / "out"),
                 AIRFLOW__SPARK_PORTABLE__WORK_DIR=str(tmp_path / "work"), **env)
    return subprocess.run([str(ROOT / "scripts" / "demo.sh"), *args], env=clean, capture_output=True, text=True,
                          timeout=900, cwd=tmp_path)


def test_the_demo_fails_when_its_run_fails(tmp_path):
    done = _demo(tmp_path, CC_GRAPH_SEEDS_ROOT=str(tmp_path / "no-seeds"))  # plan fails: no seed lists
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "demo run of common_crawl_graph did not succeed: run state failed" in done.stderr


@pytest.mark.spark
def test_the_demo_succeeds_when_its_run_succeeds(tmp_path):
    done = _demo(tmp_path, "example_spark_portable")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "demo run of example_spark_portable succeeded (run state: success)" in done.stdout
