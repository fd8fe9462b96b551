"""SparkPortableOperator: one PySpark job, any engine, chosen by one ``engine`` key."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_spark_portable import links, settings
from airflow_spark_portable.engines import check_engine_name, get_engine_class
from airflow_spark_portable.engines.base import CANCELLED, SUCCEEDED, Engine, JobSpec, RunHandle, RunResult, run_name
from airflow_spark_portable.exceptions import SparkJobFailed, SparkPortableConfigError
from airflow_spark_portable.pipes import JobReport
from airflow_spark_portable.profiles import Profiles, spark_conf_strings
from airflow_spark_portable.project import find_project_root, profiles_path, resolve_application
from airflow_spark_portable.redaction import mask, redact, secret_values
from airflow_spark_portable.runtime import protocol
from airflow_spark_portable.runtime.context import JobContext, RunIdentity

if TYPE_CHECKING:
    from airflow.sdk import Context

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ERROR_TAIL_LINES = 20
# How often a resumed task goes back to waiting when the trigger stopped but the run goes on.
MAX_REWAITS = 3
# next_method of a task the scheduler resumes only to fail it: its trigger timed out or crashed
_TRIGGER_FAILED = "__fail__"


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _is_deferred(value: Any) -> bool:
    """Filled in when the task starts: a Jinja template, or what Airflow resolves then (an
    XComArg, a mapped task group's argument: anything with ``resolve``, as its templater sees it)."""
    return _is_template(value) or (not isinstance(value, os.PathLike) and callable(getattr(value, "resolve", None)))


# what each mapping argument looks like, for the error that shows it
_MAPPING_EXAMPLES = {
    "conf": {"spark.sql.shuffle.partitions": "8"},
    "env": {"LOG_LEVEL": "debug"},
    "partition": {"year": "2024"},
    "inputs": {"cc": "s3://commoncrawl/"},
    "extras": {"max_files": 10},
    "engine_options": {"aws_conn_id": "aws_default"},
}
_NATIVE_HINT = "; a template renders to a list or dict only on a DAG with render_template_as_native_obj=True"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # s3://, https://, file:///, dbfs:/, ...


def is_absolute_location(text: str) -> bool:
    """An absolute folder or a URI (``s3://``, ``dbfs:/``, ``file:///``...): not relative to
    whatever folder a worker or job happens to run in."""
    return text.startswith("/") or bool(_URI.match(text))


def _got(value: Any, native_hint: bool) -> str:
    hint = _NATIVE_HINT if native_hint and isinstance(value, str) else ""
    return f"got the {type(value).__name__} {value!r}{hint}"


def _check_mapping(value: Any, name: str, native_hint: bool = False) -> None:
    if not isinstance(value, Mapping):
        raise SparkPortableConfigError(
            f"{name} must be a mapping, e.g. {name}={_MAPPING_EXAMPLES[name]!r}, {_got(value, native_hint)}"
        )


def _mapping_argument(value: Any, name: str) -> Any:
    """A mapping argument as given to ``__init__``: a dict, or left for the task start."""
    if value is None:
        return {}
    if _is_deferred(value):
        return value
    _check_mapping(value, name)
    return dict(value)


def _check_args(value: Any, native_hint: bool = False) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise SparkPortableConfigError(
            f"application_args must be a list of strings, e.g. ['--verbose'], {_got(value, native_hint)}"
        )
    for arg in value:
        if isinstance(arg, (dict, list, tuple, set)) or arg is None:
            raise SparkPortableConfigError(f"application_args item {arg!r} must be a string or number")


def _check_locations(output_root: Any, inputs: Any, rendered: bool) -> None:
    """A relative path would resolve against the job's working directory, which differs per
    engine (the local engine's is the DAG bundle folder)."""
    named = [("output_root", output_root)] if output_root else []
    if isinstance(inputs, Mapping):
        named += [(f"inputs[{key!r}]", value) for key, value in inputs.items()]
    for name, value in named:
        if not rendered and (_is_deferred(value) or not isinstance(value, (str, os.PathLike))):
            continue  # checked once rendered
        text = str(value)
        if not is_absolute_location(text):
            raise SparkPortableConfigError(
                f"{name}={text!r} is a relative path; give an absolute folder or a URI (s3://..., "
                "https://..., file:///..., dbfs:/...)"
            )


def _string_map(value: Any, name: str, native_hint: bool) -> dict[str, str]:
    if value is None:
        return {}
    _check_mapping(value, name, native_hint)
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise SparkPortableConfigError(f"{name}: key {key!r} must be a non-empty string")
        if item is None or isinstance(item, (dict, list, tuple, set)):
            raise SparkPortableConfigError(f"{name}[{key!r}] must be a string or number, got {item!r}")
        out[key] = str(item)
    return out


def _default_deferrable() -> bool:
    return settings.airflow_conf().getboolean("operators", "default_deferrable", fallback=False)


class SparkPortableOperator(BaseOperator):
    """Run a PySpark job file from ``jobs/`` on ``local`` spark-submit, an EMR step or a
    Databricks one-time run; the job, its arguments and its context stay the same.

    :param application: job file, relative to the project root (``jobs/nodes.py``) or absolute.
    :param engine: ``local``, ``emr`` or ``databricks``. Templated, so a DAG param can pick it.
    :param application_args: command-line arguments for the job, a list; a template must render to
        one (a DAG with ``render_template_as_native_obj=True``).
    :param conf: Spark conf for this task, on top of the profile's.
    :param profile: named size from ``profiles.yaml`` (default ``[spark_portable] default_profile``).
    :param env: environment variables for the job (keys are logged, values never: they are
        masked in logs and the Rendered Template view).
    :param crawl: partition key handed to the job as ``context.crawl``.
    :param domain: partition key handed to the job as ``context.domain``.
    :param partition: further partition keys.
    :param inputs: named input roots, e.g. ``{"cc": "s3://commoncrawl/"}``: absolute folders or URIs.
    :param output_root: where the job writes: an absolute folder or a URI.
    :param extras: any other JSON values the job needs.
    :param engine_options: engine-specific settings (connection ids, cluster ids, ...).
    :param deferrable: free the worker slot while a remote engine runs the job.
    :param poll_interval: seconds between status checks of a remote run.

    Returns (XCom ``return_value``) the metrics the job reported, plus run details under
    ``"spark_portable"``.
    """

    template_fields: Sequence[str] = (
        "engine",
        "application",
        "application_args",
        "conf",
        "profile",
        "env",
        "crawl",
        "domain",
        "partition",
        "inputs",
        "output_root",
        "extras",
        "engine_options",
    )
    template_fields_renderers = {"conf": "json", "partition": "json", "inputs": "json", "extras": "json"}
    operator_extra_links = links.ALL
    ui_color = "#fdd9a8"

    def __init__(
        self,
        *,
        application: str,
        engine: str = "local",
        application_args: Sequence[Any] | None = None,
        conf: Mapping[str, Any] | None = None,
        profile: str | None = None,
        env: Mapping[str, str] | None = None,
        crawl: str | None = None,
        domain: str | None = None,
        partition: Mapping[str, str] | None = None,
        inputs: Mapping[str, str] | None = None,
        output_root: str | None = None,
        extras: Mapping[str, Any] | None = None,
        engine_options: Mapping[str, Any] | None = None,
        deferrable: bool | None = None,
        poll_interval: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(engine, str) and not _is_template(engine):
            check_engine_name(engine)  # a literal typo fails when the DAG is parsed
        self.engine = engine
        self.application = application
        # literal values are checked here, so a typo is a DAG import error; templates and
        # XComArgs are checked again once rendered (build_spec)
        if application_args is None:
            application_args = []
        elif not _is_deferred(application_args):
            _check_args(application_args)
            application_args = list(application_args)
        self.application_args = application_args
        self.conf = _mapping_argument(conf, "conf")
        self.profile = profile
        self.env = _mapping_argument(env, "env")
        self.crawl = crawl
        self.domain = domain
        self.partition = _mapping_argument(partition, "partition")
        self.inputs = _mapping_argument(inputs, "inputs")
        self.output_root = output_root
        self.extras = _mapping_argument(extras, "extras")
        self.engine_options = _mapping_argument(engine_options, "engine_options")
        _check_locations(output_root, self.inputs, rendered=False)
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self._engine: Engine | None = None
        self._handle: RunHandle | None = None

    def _do_render_template_fields(self, parent, template_fields, context, jinja_env, seen_oids) -> None:
        # Airflow stores the rendered fields right after rendering: masked here, the values show
        # as *** in the Rendered Template view, task logs and the supervisor's output. (This, not
        # render_template_fields, is what a mapped task's unmapped operator is rendered by, 3.0-3.3.)
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
        if parent is self:
            self._mask_secrets(self.conf, self.env, self.application_args)

    @staticmethod
    def _mask_secrets(conf: Any, env: Any, args: Any) -> None:
        """Register the secrets among values that may not be checked yet (checks come later)."""
        conf = conf if isinstance(conf, Mapping) else {}
        env = env if isinstance(env, Mapping) else {}
        args = args if isinstance(args, Sequence) and not isinstance(args, (str, bytes)) else []
        mask(
            secret_values(
                conf={str(k): str(v) for k, v in conf.items() if isinstance(v, (str, int, float))},
                env={str(k): str(v) for k, v in env.items() if isinstance(v, (str, int, float))},
                args=[str(a) for a in args if isinstance(a, (str, int, float))],
            )
        )

    # -- building the spec -------------------------------------------------------------

    def _dag_file(self) -> str | None:
        return getattr(self.dag, "fileloc", None) if self.has_dag() else None

    @property
    def _native_hint(self) -> bool:
        """A string rendered where a list or dict belongs came from a DAG that renders templates
        to strings: say how to render them to objects (unless this DAG does already)."""
        return not (self.has_dag() and self.dag.render_template_as_native_obj)

    def _job_context(self, context: Context, engine: str, profile: str) -> JobContext:
        ti = context["ti"]
        logical_date = context.get("logical_date")
        partition = _string_map(self.partition, "partition", self._native_hint)
        for key, value in (("crawl", self.crawl), ("domain", self.domain)):
            if value is not None:
                partition[key] = str(value)
        extras = self.extras
        _check_mapping(extras, "extras", self._native_hint)
        try:
            json.dumps(extras, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SparkPortableConfigError(
                f"extras must be JSON values (strings, numbers, lists, dicts): {exc}"
            ) from None
        inputs = _string_map(self.inputs, "inputs", self._native_hint)
        output_root = str(self.output_root) if self.output_root else None
        _check_locations(output_root, inputs, rendered=True)
        return JobContext(
            engine=engine,
            profile=profile,
            run=RunIdentity(
                dag_id=ti.dag_id,
                task_id=ti.task_id,
                run_id=ti.run_id,
                map_index=ti.map_index if ti.map_index is not None else -1,
                try_number=ti.try_number,
                logical_date=logical_date.isoformat() if logical_date else None,
            ),
            partition=partition,
            inputs=inputs,
            output_root=output_root,
            extras=extras,
            application_args=self._application_args(),
        )

    def _application_args(self) -> list[str]:
        _check_args(self.application_args, self._native_hint)
        return [str(arg) for arg in self.application_args]

    def _job_env(self) -> dict[str, str]:
        env = _string_map(self.env, "env", self._native_hint)
        for key in env:
            if not _ENV_NAME.match(key):
                raise SparkPortableConfigError(f"env: {key!r} is not a valid environment variable name")
            if key in (protocol.ENV_CONTEXT, protocol.ENV_MESSAGES):
                raise SparkPortableConfigError(f"env: {key} is set by the engine; remove it from env")
        return env

    def build_spec(self, context: Context) -> tuple[type[Engine], JobSpec]:
        engine_name = check_engine_name(self.engine)
        _check_mapping(self.engine_options, "engine_options", self._native_hint)
        _check_mapping(self.conf, "conf", self._native_hint)
        engine_cls = get_engine_class(engine_name)
        dag_file = self._dag_file()
        root = find_project_root(dag_file)
        profile_name = self.profile or settings.default_profile()
        if not isinstance(profile_name, str):
            raise SparkPortableConfigError(f"profile={profile_name!r} must be a profile name")
        profile = Profiles.load(profiles_path(root, dag_file)).get(profile_name)
        section = engine_cls.validate_profile(profile)
        application = resolve_application(self.application, root, dag_file)
        spark_conf = {
            **profile.spark_conf,
            **section.get("conf", {}),
            **spark_conf_strings(self.conf, "conf"),
        }
        job_context = self._job_context(context, engine_name, profile.name)
        run = job_context.run
        tags = {
            "airflow:dag_id": run.dag_id,
            "airflow:task_id": run.task_id,
            "airflow:run_id": run.run_id,
            "airflow:map_index": str(run.map_index),
            "airflow:try_number": str(run.try_number),
            "spark_portable:engine": engine_name,
            "spark_portable:profile": profile.name,
            **{f"partition:{k}": v for k, v in job_context.partition.items()},
        }
        spec = JobSpec(
            name=run_name(job_context),
            application=application,
            code_root=root if root is not None else application.parent,
            application_args=job_context.application_args,
            spark_conf=spark_conf,
            profile=profile,
            env=self._job_env(),
            context=job_context,
            tags=tags,
        )
        return engine_cls, spec

    # -- running -----------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        engine_cls, spec = self.build_spec(context)
        self._mask_secrets(spec.spark_conf, spec.env, spec.application_args)  # with the profile's conf
        engine = engine_cls(self.engine_options, self.log)
        self.log.info(
            "Running %s on engine=%s profile=%s as %s", spec.application.name, engine.name, spec.profile.name, spec.name
        )
        meta = {
            "engine": engine.name,
            "profile": spec.profile.name,
            "application": str(spec.application),
            "run_name": spec.name,
            "started": time.time(),
            "partition": dict(spec.context.partition),
            "output_root": spec.context.output_root,
        }
        channel = engine.open_channel(spec)
        handle = engine.find_active_run(spec)
        if handle is not None:
            self.log.info("Reattaching to the %s run this task instance already started: %s", engine.name, handle)
        else:
            channel.write_context(spec.context)
            handle = engine.submit(spec, channel)
        self._engine, self._handle = engine, handle
        self._push_links(context, engine, handle)
        if self.deferrable:
            trigger = engine.trigger(handle, self.poll_interval)
            if trigger is not None:
                self.log.info("Deferring: the worker slot is free while %s runs the job", engine.name)
                self._defer(trigger, handle, meta)
        try:
            result = engine.wait(handle)
        except Exception as exc:
            self._cancel_after(engine, handle, f"waiting for it failed ({type(exc).__name__}: {exc})")
            raise
        return self._finish(engine, handle, result, meta, context)

    def _defer(self, trigger, handle: RunHandle, meta: dict[str, Any]) -> None:
        from datetime import timedelta

        from airflow_spark_portable.triggers import EngineRunTrigger

        timeout = None
        if self.execution_timeout is not None:  # Airflow 3 does not apply it to a deferral itself
            left = self.execution_timeout.total_seconds() - (time.time() - meta["started"])
            timeout = timedelta(seconds=max(1.0, left))
        self.defer(
            trigger=EngineRunTrigger.wrap(trigger, handle, meta),
            method_name="execute_complete",
            kwargs={"handle": handle, "meta": meta},
            timeout=timeout,
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context):
        """A deferral that timed out (execution_timeout) or whose trigger crashed comes back
        only to fail, without the run's handle: find the run by its name and cancel it first."""
        if next_method == _TRIGGER_FAILED:
            try:
                engine_cls, spec = self.build_spec(context)
                engine = engine_cls(self.engine_options, self.log)
                handle = engine.find_active_run(spec)
                if handle is not None:
                    error = (next_kwargs or {}).get("error", "the trigger failed")
                    self._cancel_after(engine, handle, f"the deferral ended without the run ({error})")
            except Exception as exc:
                self.log.error("Could not look for the remote run to cancel it: %s. Check the engine's console", exc)
        return super().resume_execution(next_method, next_kwargs, context)

    def _cancel_after(self, engine: Engine, handle: RunHandle, why: str) -> None:
        """The task is about to fail while the remote run may still be live: cancel it, so
        it neither keeps billing nor races a retry into the same partition."""
        self.log.error("Cancelling the %s run %s before failing: %s", engine.name, handle, why)
        try:
            engine.cancel(handle)
        except Exception as exc:
            self.log.error("Could not cancel the %s run %s: %s. Cancel it in the console", engine.name, handle, exc)

    def execute_complete(
        self,
        context: Context,
        event: Mapping[str, Any],
        handle: RunHandle | None = None,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        # EngineRunTrigger's event carries the handle too (dags test drops the defer kwargs)
        handle = handle or event["handle"]
        meta = meta or event["meta"]
        engine = get_engine_class(handle["engine"])(self.engine_options, self.log)
        self._engine, self._handle = engine, handle
        # The trigger's event is not the verdict: a trigger that failed (throttling, a lost
        # connection, a provider bug) also fires. The run itself says whether it has ended.
        inner = event.get("event") or {}
        try:
            result = engine.poll(handle)
        except Exception as exc:
            self._cancel_after(engine, handle, f"its state could not be read ({type(exc).__name__}: {exc})")
            raise
        if result is None:
            why = f"the trigger stopped waiting ({inner.get('status', '?')}: {inner.get('message', '')}) but the run is still live"
            rewaits = int(meta.get("rewaits", 0))
            trigger = engine.trigger(handle, self.poll_interval)
            if rewaits < MAX_REWAITS and trigger is not None:
                self.log.warning("%s: waiting again (%d of %d)", why, rewaits + 1, MAX_REWAITS)
                self._defer(trigger, handle, {**meta, "rewaits": rewaits + 1})
            self._cancel_after(engine, handle, f"{why}, {MAX_REWAITS} times")
            raise SparkJobFailed(
                f"job {meta['application']}: {why}, {MAX_REWAITS} times in a row; the run was cancelled "
                "so it does not run on unwatched. Check the triggerer's log and the engine's API access"
            )
        return self._finish(engine, handle, result, meta, context)

    def _push_links(self, context: Context, engine: Engine, handle: RunHandle) -> None:
        """Console URLs of the run, as extra links (visible while it runs) and in the log."""
        try:
            urls = engine.links(handle)
        except Exception as exc:  # a link is a convenience; the run matters
            self.log.warning("Could not build the %s links: %s", engine.name, exc)
            return
        for link in links.ALL:
            url = urls.get(link.kind)
            if url:
                self.log.info("%s: %s", link.name, url)
                if self.do_xcom_push:
                    context["ti"].xcom_push(key=link.key, value=url)

    def on_kill(self) -> None:
        if self._engine is not None and self._handle is not None:
            self._engine.cancel(self._handle)

    # -- deciding ----------------------------------------------------------------------

    def _finish(
        self, engine: Engine, handle: RunHandle, result: RunResult, meta: dict[str, Any], context: Context
    ) -> dict[str, Any]:
        report = JobReport()
        for message in engine.channel_for(handle).read_new_messages():
            report.add(message)
        if not engine.streams_output:
            for message in report.logs:
                self.log.info("[job] %s", message.get("text", ""))
        ok = result.state == SUCCEEDED and report.completed and report.failure is None
        if not engine.streams_output and result.state != CANCELLED:  # a kill must end fast
            try:
                for line in engine.fetch_logs(handle, succeeded=ok):
                    self.log.info("[driver] %s", line)
            except Exception as exc:  # the job's outcome, below, matters more than its log
                self.log.warning("Could not fetch the driver log from %s: %s", engine.name, exc)
        cost = self._estimate_cost(engine, handle)
        if not ok:
            raise SparkJobFailed(self._failure_text(result, report, meta))
        metrics = redact(dict(report.metrics))  # a job that echoes a secret does not put it in XCom
        metrics[protocol.RESERVED_METRIC_KEY] = {
            "engine": meta["engine"],
            "profile": meta["profile"],
            "application": meta["application"],
            "run_name": meta["run_name"],
            "wall_seconds": round(time.time() - meta["started"], 3),
            "partition": meta["partition"],
            **({"cost": cost} if cost is not None else {}),
        }
        self.log.info("Job metrics:\n%s", json.dumps(metrics, indent=2, sort_keys=True, default=str))
        self._describe_outlets(context, meta, metrics)
        return metrics

    def _estimate_cost(self, engine: Engine, handle: RunHandle) -> dict[str, Any] | None:
        try:
            cost = engine.cost(handle)
        except Exception as exc:  # an estimate must never fail a run that did its work
            self.log.warning("Could not estimate the cost of the %s run: %s", engine.name, exc)
            return None
        if cost is not None:
            self.log.info(
                "Estimated cost: %s %.4f (infrastructure %.4f + platform %.4f; %s; %s)",
                cost["currency"],
                cost["total"],
                cost["infrastructure"],
                cost["platform"],
                cost["basis"],
                cost["price_table"],
            )
            if cost.get("unpriced"):
                self.log.warning(
                    "Instance types missing from the price table, not in the estimate: %s (hours). Add them "
                    "to the table ([spark_portable] price_table)",
                    cost["unpriced"],
                )
        return cost

    def _describe_outlets(self, context: Context, meta: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Tag this task's asset events with the partition it wrote, so lineage and
        asset-triggered DAGs see which (crawl, domain) changed."""
        events = context.get("outlet_events") if self.outlets else None
        if events is None:  # (an empty accessor mapping is falsy: test for None)
            return
        extra = {"partition": meta["partition"], "output_root": meta["output_root"], "run_name": meta["run_name"]}
        if isinstance(metrics.get("rows"), int):
            extra["rows"] = metrics["rows"]
        for outlet in self.outlets:
            try:
                events[outlet].extra.update(extra)
            except (KeyError, TypeError, AttributeError):  # not an asset (e.g. an alias)
                self.log.debug("outlet %r takes no event extra", outlet)

    def _failure_text(self, result: RunResult, report: JobReport, meta: dict[str, Any]) -> str:
        job = meta["application"]
        if result.state == CANCELLED:
            return f"job {job} was cancelled ({result.message})"
        if report.failure is not None:
            trace = report.failure.get("traceback") or ""
            if trace:
                self.log.error("Job traceback:\n%s", trace)
            return f"job {job} failed: {report.failure.get('error_type')}: {report.failure.get('message')}"
        tail = "\n".join(result.log_tail[-_ERROR_TAIL_LINES:])
        if result.state == SUCCEEDED:
            opened = "" if report.opened else " and never opened it (it does not use the runtime)"
            return (
                f"job {job} exited successfully without reporting completion{opened}. A job must run "
                "inside `with open_job() as job:` or be a SparkJob subclass started with `.main()` "
                "(airflow_spark_portable.runtime)"
            )
        return f"job {job}: {result.message}; it reported no error of its own. Last output:\n{tail}"
