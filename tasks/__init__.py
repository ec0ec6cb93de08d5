"""The stages of the loop as plain typed functions, each with a thin Prefect @task wrapper."""
