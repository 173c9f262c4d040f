-- Runs once, when the postgres volume is first created: MLflow's own database.
CREATE DATABASE mlflow;
