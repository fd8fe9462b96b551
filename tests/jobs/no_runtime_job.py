"""A plain PySpark script that never uses the runtime; exits with the code in argv[1]."""

import sys

from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
print("counted", spark.range(3).count(), "rows")
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
