"""airflow-spark-portable: one PySpark job, run on local spark-submit, EMR or Databricks.

Kept import-free: the job runtime (``airflow_spark_portable.runtime``) is shipped to clusters
that have no Airflow, and importing this package must not pull Airflow in.
"""

__version__ = "0.1.0"
