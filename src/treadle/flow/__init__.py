"""The Makeflow language, the workflow model, the DAG engine and its journal."""
