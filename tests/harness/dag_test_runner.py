"""Run ``dag.test()`` for one DAG file in this process and write what happened as JSON.

Tests start it as a subprocess so each run gets a fresh interpreter (as a worker would)
and so a test can signal it mid-run. Usage: dag_test_runner.py DAG_FILE DAG_ID RESULT_JSON [CONF_JSON]
"""

import json
import sys

try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow >= 3.1
except ImportError:
    from airflow.models.dagbag import DagBag
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session


def main() -> None:
    dag_file, dag_id, result_path = sys.argv[1:4]
    conf = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
    bag = DagBag(dag_folder=dag_file)
    if bag.import_errors:
        json.dump({"import_errors": {k: str(v) for k, v in bag.import_errors.items()}}, open(result_path, "w"))
        sys.exit(3)
    dag = bag.get_dag(dag_id)
    run = dag.test(run_conf=conf)
    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run.run_id).all()
        states = {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in tis}
        xcoms, other_keys = {}, {}
        for row in session.query(XComModel).filter_by(dag_id=dag_id, run_id=run.run_id):
            ti_name = f"{row.task_id}[{row.map_index}]"
            if row.key == "return_value":
                xcoms[ti_name] = XComModel.deserialize_value(row)
            else:
                other_keys.setdefault(ti_name, {})[row.key] = XComModel.deserialize_value(row)
        assets = []
        try:
            from airflow.models.asset import AssetEvent, AssetModel

            for event in session.query(AssetEvent).filter_by(source_dag_id=dag_id, source_run_id=run.run_id):
                asset = session.get(AssetModel, event.asset_id)
                assets.append({"asset": asset.name, "task_id": event.source_task_id, "extra": event.extra})
        except ImportError:  # older layouts
            pass
    with open(result_path, "w") as fh:
        json.dump(
            {
                "run_id": run.run_id,
                "state": str(run.state),
                "tasks": states,
                "xcom": xcoms,
                "xcom_keys": other_keys,
                "asset_events": assets,
            },
            fh,
            default=str,
        )


if __name__ == "__main__":
    main()
